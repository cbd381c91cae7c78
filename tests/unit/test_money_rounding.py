"""The rounding rule of gateway/domain/money.py, as properties: usage costs are exact,
invoice lines round once, half to even, to the cent; totals are sums of rounded lines."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.domain.money import fmt, fmt_cents, fmt_minor, line_amount, total, usage_cost
from gateway.services.reports import invoice_totals

tokens = st.integers(min_value=0, max_value=10**12)
prices = st.decimals(min_value="0", max_value="100", places=6, allow_nan=False, allow_infinity=False)


def half_even_cents(exact: Fraction) -> Fraction:
    """The documented rule, computed independently with integers."""
    cents = exact * 100
    floor = cents.numerator // cents.denominator
    rest = cents - floor
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and floor % 2 == 1):
        floor += 1
    return Fraction(floor, 100)


@given(tokens, prices)
def test_usage_cost_is_exact(n, price):
    assert Fraction(usage_cost(n, price)) == Fraction(n) * Fraction(price) / 1000


@given(tokens, prices)
def test_a_line_rounds_once_half_to_even_to_the_cent(n, price):
    amount = line_amount(n, price)
    exact = Fraction(n) * Fraction(price) / 1000
    assert Fraction(amount) == half_even_cents(exact)
    assert abs(Fraction(amount) - exact) <= Fraction(1, 200)
    assert amount.as_tuple().exponent == -2


def test_ties_go_to_the_even_cent():
    # at 0.0050 per 1k: 3,000 tokens = 0.015 -> 0.02; 5,000 = 0.025 -> 0.02; 7,000 = 0.035 -> 0.04
    assert fmt_cents(line_amount(3_000, Decimal("0.0050"))) == "0.02"
    assert fmt_cents(line_amount(5_000, Decimal("0.0050"))) == "0.02"
    assert fmt_cents(line_amount(7_000, Decimal("0.0050"))) == "0.04"
    assert fmt_cents(line_amount(2_500, Decimal("0.0050"))) == "0.01"  # 0.0125: below half a cent
    assert fmt_cents(line_amount(0, Decimal("0.0050"))) == "0.00"


def _line(tenant: str, model: str, currency: str, n: int, price: Decimal, prepaid_share: float) -> dict:
    exact = usage_cost(n, price)
    credit = exact * Decimal(str(prepaid_share))
    return {"month": "2026-01", "tenant_id": tenant, "tenant_name": tenant, "model": model, "currency": currency,
            "requests": 1 + n % 97, "prompt_tokens": n, "amount": fmt_minor(exact, currency),
            "credits_applied": fmt_minor(credit, currency), "amount_due": fmt_minor(exact - credit, currency)}


line = st.builds(_line, st.sampled_from(["ten_a", "ten_b", "ten_c"]), st.sampled_from(["m1", "m2"]),
                 st.sampled_from(["USD", "EUR", "JPY"]), tokens, prices, st.sampled_from([0.0, 0.5, 1.0]))


@settings(max_examples=200)
@given(st.lists(line, max_size=30))
def test_invoice_totals_are_the_sums_of_their_lines(lines):
    result = invoice_totals(lines)
    for row in result["totals"]:
        mine = [x for x in lines if x["currency"] == row["currency"]]
        assert Decimal(row["amount"]) == sum((Decimal(x["amount"]) for x in mine), Decimal(0))
        assert row["prompt_tokens"] == sum(x["prompt_tokens"] for x in mine)
        assert row["requests"] == sum(x["requests"] for x in mine)
        assert Decimal(row["credits_applied"]) == sum((Decimal(x["credits_applied"]) for x in mine), Decimal(0))
        assert Decimal(row["amount_due"]) == sum((Decimal(x["amount_due"]) for x in mine), Decimal(0))
        subtotals = [s for s in result["subtotals"] if s["currency"] == row["currency"]]
        assert Decimal(row["amount"]) == sum((Decimal(s["amount"]) for s in subtotals), Decimal(0))
        places = 0 if row["currency"] == "JPY" else 2  # the currency's minor unit, always shown
        assert len(row["amount"].partition(".")[2]) == places
    for sub in result["subtotals"]:
        mine = [x for x in lines if (x["tenant_id"], x["currency"]) == (sub["tenant_id"], sub["currency"])]
        assert Decimal(sub["amount"]) == total(Decimal(x["amount"]) for x in mine)
    assert {r["currency"] for r in result["totals"]} == {x["currency"] for x in lines}


@given(st.decimals(min_value="0", max_value="1e12", places=8, allow_nan=False, allow_infinity=False))
def test_money_strings_are_plain_decimals(value):
    text = fmt(value)
    assert "E" not in text and "e" not in text and "," not in text
    assert Decimal(text) == value
