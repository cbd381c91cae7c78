"""Money: exact decimals only.

Usage rows carry the exact cost (tokens x price / 1000 is a finite decimal, so nothing is
rounded). Invoice lines are rounded once, half-even to the cent, and an invoice total is
the sum of its rounded lines, so a total always equals what its lines show.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

CENT = Decimal("0.01")


def usage_cost(prompt_tokens: int, price_per_1k_tokens: Decimal) -> Decimal:
    return Decimal(prompt_tokens) * price_per_1k_tokens / Decimal(1000)


def to_cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_EVEN)


def fmt(amount: Decimal) -> str:
    """A plain decimal string (no exponent), as a spreadsheet reads it."""
    return format(amount.normalize(), "f")
