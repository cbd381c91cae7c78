from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from gateway.domain.money import fmt, to_cents, usage_cost
from gateway.domain.plans import LimitOverrides, load_catalog
from gateway.domain.registry import MODELS


def test_catalog_loads_and_prices_every_model():
    catalog = load_catalog()
    assert {p.name for p in catalog.plans} >= {"free", "starter", "pro", "internal"}
    ids = {spec.id for spec in MODELS.values()}
    for plan in catalog.plans:
        # A plan prices only catalogued models, and every plan includes the first (default) one.
        assert set(plan.price_per_1k_tokens) | set(plan.tiers) <= ids
        assert plan.includes("all-MiniLM-L6-v2")
    # Every catalogued model is sold on some plan; free has MiniLM alone (MPNet is a 403 there).
    assert all(any(plan.includes(model) for plan in catalog.plans if plan.name != "internal") for model in ids)
    assert not catalog.get("free").includes("all-mpnet-base-v2")
    assert catalog.get("starter").price_listing("all-mpnet-base-v2") == "0.0200"


def test_overrides_replace_only_what_they_name():
    limits = load_catalog().get("starter").limits
    changed = LimitOverrides(monthly_tokens=7).apply(limits)
    assert changed.monthly_tokens == 7
    assert changed.requests_per_minute == limits.requests_per_minute


def test_limits_reject_nonsense():
    with pytest.raises(ValidationError):
        LimitOverrides(requests_per_minute=0)
    with pytest.raises(ValidationError):
        LimitOverrides(bogus=1)


def test_usage_cost_is_exact():
    assert usage_cost(3, Decimal("0.0050")) == Decimal("0.000015")
    assert fmt(usage_cost(1000, Decimal("0.0050"))) == "0.005"
    assert fmt(Decimal("100")) == "100"


@given(st.lists(st.tuples(st.integers(0, 10**9), st.decimals("0", "10", places=4)), max_size=20))
def test_invoice_total_is_the_sum_of_rounded_lines(lines):
    rounded = [to_cents(usage_cost(tokens, price)) for tokens, price in lines]
    assert sum(rounded, Decimal(0)) == sum((to_cents(usage_cost(t, p)) for t, p in lines), Decimal(0))
    for (tokens, price), amount in zip(lines, rounded, strict=True):
        assert abs(amount - usage_cost(tokens, price)) <= Decimal("0.005")
        assert amount == amount.quantize(Decimal("0.01"))
