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
   (``fmt``); invoice amounts always have two decimals (``"12.30"``).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_HALF_EVEN, Decimal

CENT = Decimal("0.01")
ZERO_CENTS = Decimal("0.00")


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


def fmt_cents(amount: Decimal) -> str:
    """An invoice amount: always two decimals (rule 5)."""
    return format(to_cents(amount), "f")
