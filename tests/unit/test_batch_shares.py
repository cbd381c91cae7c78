"""A batch's one reservation shared out among its lines (gateway/domain/batches.py): each
line's slice is exact, every split of the lines adds up to the whole, tiers and grants
included, and the batch price defaults to half the online one."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.domain.batches import Reservation, Shares, chunks, model_of_label, usage_label
from gateway.domain.money import tiered_cost
from gateway.domain.plans import Plan


def reservation_for(line_tokens: list[int], tiers: list[tuple[int | None, int]], used: int,
                    grants: list[tuple[str, int]]) -> Reservation:
    """What admit.lua reserves for the lines' tokens, ``used`` tokens into the month, paid
    from ``grants`` in order (as much of each as it holds)."""
    cost, per_tier = tiered_cost(used, sum(line_tokens), tiers)
    debits, left = [], cost
    for grant, amount in grants:
        part = min(amount, left)
        if part:
            debits.append(f"{grant}:{part}")
        left -= part
    return Reservation(cost_nano=cost, tier_tokens=tuple(per_tier), debits=",".join(debits))


@given(line_tokens=st.lists(st.integers(1, 300), min_size=1, max_size=40), used=st.integers(0, 5000),
       seed=st.integers(0, 2**32))
def test_any_split_of_the_lines_adds_up_to_the_reservation(line_tokens: list[int], used: int, seed: int) -> None:
    tiers = [(1000, 7), (4000, 3), (None, 1)]
    grants = [("g1", 1234), ("g2", 10**12)]
    reservation = reservation_for(line_tokens, tiers, used, grants)
    shares = Shares(reservation, [p for _, p in tiers], line_tokens)
    lines = list(range(len(line_tokens)))
    random.Random(seed).shuffle(lines)
    cut = len(lines) // 2
    first, second = shares.share(lines[:cut]), shares.share(lines[cut:])
    assert first.tokens + second.tokens == sum(line_tokens)
    assert first.cost_nano + second.cost_nano == reservation.cost_nano
    assert [a + b for a, b in zip(first.tier_tokens, second.tier_tokens, strict=True)] == list(reservation.tier_tokens)
    debited: dict[str, int] = {}
    for share in (first, second):
        for part in filter(None, share.debits.split(",")):
            grant, amount = part.split(":")
            debited[grant] = debited.get(grant, 0) + int(amount)
    assert debited == {g: int(a) for g, a in (p.split(":") for p in reservation.debits.split(",") if p)}


def test_a_line_costs_its_own_tokens_at_the_tier_its_place_falls_in() -> None:
    # 10 tokens of the month used; tier 1 up to 15 at 5, then 1: line 0 (4 tokens) is all in
    # tier 1, line 1 (3 tokens) has 1 token in tier 1 and 2 above.
    reservation = reservation_for([4, 3], [(15, 5), (None, 1)], 10, [])
    shares = Shares(reservation, [5, 1], [4, 3])
    assert shares.share([0]).cost_nano == 20 and shares.share([0]).tier_tokens == (4, 0)
    assert shares.share([1]).cost_nano == 7 and shares.share([1]).tier_tokens == (1, 2)
    assert shares.share([]).empty


def test_a_reservation_that_does_not_match_its_lines_is_refused() -> None:
    reservation = Reservation(cost_nano=10, tier_tokens=(5,), debits="")
    with pytest.raises(ValueError, match="counts 5 tokens, the lines 6"):
        Shares(reservation, [2], [3, 3])
    with pytest.raises(ValueError, match="the lines cost 10 nano, the reservation 12"):
        Shares(Reservation(cost_nano=12, tier_tokens=(5,), debits=""), [2], [2, 3])


def test_chunks_and_labels() -> None:
    assert chunks(5, 2) == [range(0, 2), range(2, 4), range(4, 5)]
    assert model_of_label(usage_label("all-MiniLM-L6-v2")) == ("all-MiniLM-L6-v2", True)
    assert model_of_label("all-MiniLM-L6-v2") == ("all-MiniLM-L6-v2", False)


def test_the_batch_price_is_half_the_online_one_unless_the_plan_names_it() -> None:
    limits = {"requests_per_minute": 1, "tokens_per_minute": 1, "monthly_tokens": 1, "max_concurrent_requests": 1}
    plan = Plan.model_validate({
        "name": "p", "limits": limits, "price_per_1k_tokens": {"a": "0.0050", "b": "0.000003"},
        "tiers": {"c": [{"up_to": 100, "price_per_1k_tokens": "0.02"}, {"up_to": None, "price_per_1k_tokens": "0.01"}]},
        "batch_price_per_1k_tokens": {"b": "0.000002"}})
    assert plan.batch_pricing("a") == [(None, 2500)] and plan.batch_price_listing("a") == "0.0025"
    assert plan.batch_pricing("b") == [(None, 2)]  # named: as given, not half of 3
    assert plan.batch_pricing("c") == [(100, 10000), (None, 5000)]
    assert plan.batch_price_listing("c") == [{"up_to": 100, "price_per_1k_tokens": "0.01"},
                                             {"up_to": None, "price_per_1k_tokens": "0.005"}]
    assert Decimal(plan.batch_price_listing("a")) * 2 == plan.price_per_1k_tokens["a"]
