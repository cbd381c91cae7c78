"""Money: exact decimals only, never float.

The rounding rule (what finance can rely on):

1. A plan prices each model per 1,000 prompt tokens, as a decimal string (``"0.0200"``).
2. A usage cost is exact: ``prompt_tokens x price / 1000`` is a finite decimal, so a usage
   row's ``cost`` is never rounded (``"0.00006"`` for 3 tokens at 0.02). Costs are summed
   exactly before anything is rounded.
3. An invoice line (one tenant, one model, one calendar month, UTC) is rounded ONCE, from
   the exact cost of the month's tokens, to the cent, half to even (banker's rounding:
   0.125 -> 0.12, 0.135 -> 0.14), so the rounding error of a line is at most half a cent
   and has no upward bias over many lines.
4. An invoice total is the sum of its rounded lines (never the rounding of an exact sum),
   so a total always equals what its lines show; a tenant's subtotal likewise.
5. Strings carry money: plain decimal notation, no exponent, no thousands separator
   (``fmt``); invoice amounts have the currency's minor-unit decimals (``"12.30"`` in USD,
   ``"1230"`` in JPY).

Inside, amounts are integers of 10^-9 of the currency ("nano" units): a request's cost is an
exact integer because prices have at most 6 decimals per 1,000 tokens (so a whole number of
nano units per token). The admission script adds and compares them in Lua doubles, which
are exact below 2^53 nano units (about 9 million currency units); every amount an admin sets
(credits, budgets, alerts) is capped at ``MAX_AMOUNT`` to stay well inside that.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

CENT = Decimal("0.01")
ZERO_CENTS = Decimal("0.00")
NANO = 10**9
MAX_AMOUNT = Decimal(1_000_000)  # per grant, budget or alert: far below the 2^53-nano exactness bound
PRICE_PLACES = 6  # per 1,000 tokens: a whole number of nano units per token

# ISO 4217 currencies we bill in, with their minor-unit digits.
CURRENCIES: dict[str, int] = {
    "USD": 2, "EUR": 2, "GBP": 2, "CHF": 2, "CAD": 2, "AUD": 2, "NZD": 2, "SEK": 2, "NOK": 2, "DKK": 2,
    "PLN": 2, "CZK": 2, "SGD": 2, "HKD": 2, "INR": 2, "BRL": 2, "MXN": 2, "ZAR": 2, "CNY": 2,
    "JPY": 0, "KRW": 0, "KWD": 3, "BHD": 3,
}


class AmountError(ValueError):
    """Not an amount we accept; the message says why, for a 400 naming the field."""


def parse_amount(value: object, *, currency: str, allow_zero: bool = False) -> Decimal:
    """An amount an admin sets (credits, budgets, alerts): a decimal string (exactness: never a
    float), positive (or zero where allowed), no more decimals than the currency's minor unit,
    at most MAX_AMOUNT."""
    if not isinstance(value, str):
        raise AmountError('must be a decimal string, e.g. "10.00"')
    try:
        amount = Decimal(value.strip())
    except InvalidOperation:
        raise AmountError('must be a decimal string, e.g. "10.00"') from None
    if not amount.is_finite():
        raise AmountError("must be a finite amount")
    if amount < 0 or (amount == 0 and not allow_zero):
        raise AmountError("must be greater than zero" if not allow_zero else "must not be negative")
    places = CURRENCIES[currency]
    if -int(amount.as_tuple().exponent) > places and amount != amount.quantize(Decimal(1).scaleb(-places)):
        raise AmountError(f"has more decimals than {currency} allows ({places})")
    if amount > MAX_AMOUNT:
        raise AmountError(f"must be at most {MAX_AMOUNT}")
    return amount


def to_nano(amount: Decimal) -> int:
    nano = amount * NANO
    if nano != nano.to_integral_value():
        raise AmountError("is finer than 10^-9 of the currency")
    return int(nano)


def from_nano(nano: int) -> Decimal:
    return Decimal(nano).scaleb(-9)


def fmt_nano(nano: int) -> str:
    """An exact cost as a plain decimal string: 20_000 -> "0.00002"."""
    return fmt(from_nano(nano))


def nano_per_token(price_per_1k_tokens: Decimal) -> int:
    """A price per 1,000 tokens (at most 6 decimals) as whole nano units per token."""
    return to_nano(Decimal(price_per_1k_tokens) / 1000)


Tiers = Sequence[tuple[int | None, int]]  # (up to this many tokens of the month or None, nano per token)


def tiered_cost(position: int, tokens: int, tiers: Tiers) -> tuple[int, list[int]]:
    """The exact cost of ``tokens`` that are the month's tokens number ``position`` to
    ``position + tokens - 1``, each part at its own tier's price, and the tokens in each tier.
    The admission script computes the same in Lua; tests/unit/test_money_and_plans.py checks
    both agree."""
    cost, per_tier, floor = 0, [], 0
    for up_to, price in tiers:
        ceiling = position + tokens if up_to is None else min(up_to, position + tokens)
        inside = max(0, ceiling - max(position, floor))
        cost += inside * price
        per_tier.append(inside)
        if up_to is None:
            break
        floor = up_to
    return cost, per_tier


def to_minor(amount: Decimal, currency: str) -> Decimal:
    """Half to even, to the currency's minor unit (rule 3)."""
    return amount.quantize(Decimal(1).scaleb(-CURRENCIES.get(currency, 2)), rounding=ROUND_HALF_EVEN)


def usage_cost(prompt_tokens: int, price_per_1k_tokens: Decimal) -> Decimal:
    """The exact cost of ``prompt_tokens`` (rule 2)."""
    return Decimal(prompt_tokens) * Decimal(price_per_1k_tokens) / Decimal(1000)


def to_cents(amount: Decimal) -> Decimal:
    """Half to even, to the cent (rule 3)."""
    return amount.quantize(CENT, rounding=ROUND_HALF_EVEN)


def line_amount(prompt_tokens: int, price_per_1k_tokens: Decimal) -> Decimal:
    """An invoice line: the month's tokens of one tenant and model, rounded once (rule 3)."""
    return to_cents(usage_cost(prompt_tokens, price_per_1k_tokens))


def total(amounts: Iterable[Decimal]) -> Decimal:
    """The sum of rounded lines (rule 4); ``0.00`` for none."""
    return sum(amounts, ZERO_CENTS)


def fmt(amount: Decimal) -> str:
    """A plain decimal string (no exponent), as a spreadsheet reads it (rule 5)."""
    text = format(amount.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def fmt_minor(amount: Decimal, currency: str) -> str:
    """An invoice amount: rounded once to the currency's minor unit, all its decimals shown."""
    return format(to_minor(amount, currency), "f")


def fmt_cents(amount: Decimal) -> str:
    """An invoice amount: always two decimals (rule 5)."""
    return format(to_cents(amount), "f")
