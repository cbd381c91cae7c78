"""Money under concurrency: randomised bursts from several processes against the real admission
and settle scripts on a real redis-server (tracker issue 11's property test).

Each process admits requests of random sizes for one prepaid tenant with a hard budget, a key
with a budget of its own, graduated prices and a low-credit alert, then charges most and
refunds the rest (a failed upstream), all at once. Whatever the interleaving:
- what was charged never exceeds the credit, the tenant's budget or the key's, by one unit;
- a refused request took nothing; a refunded one gave everything back (the counters and the
  credit left equal exactly what the charged requests took);
- each request's cost is its tokens at their tiers' prices;
- each alert whose cause happened fired exactly once, and no other.
"""

from __future__ import annotations

import json
import multiprocessing
import random
import uuid
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import redis

from gateway.adapters.redis_store import RedisLimiter, events_stream, key_month_key, month_key, usage_stream
from gateway.domain.admission import Grant, KeySettings, MoneySettings, Ticket, Verdict, alert_levels
from gateway.domain.money import to_nano
from gateway.domain.plans import BillingMode, Budget, LimitOverrides, Limits
from gateway.domain.usage import UsageEvent
from tests.integration.conftest import seed_empty

MONTH = datetime.now(UTC).strftime("%Y-%m")
LIMITS = Limits(requests_per_minute=10**6, tokens_per_minute=10**8, monthly_tokens=10**9, max_concurrent_requests=10**4)
PRICING = ((40, 3_000_000), (None, 1_000_000))  # 3.00 per 1,000 tokens up to the month's 40th token, then 1.00
CREDIT = [("cr_soon", 150_000_000), ("cr_later", 200_000_000)]  # 0.15 and 0.20
TENANT_BUDGET = Budget(monthly_amount=Decimal("0.30"), hard=True,
                       alert_thresholds=[Decimal(x) for x in ("0.25", "0.5", "0.75", "1")])
KEY_BUDGET = Budget(monthly_amount=Decimal("0.12"), hard=True,
                    alert_thresholds=[Decimal("0.5")])
LOW = 100_000_000  # alert below 0.10 left
PROCESSES, REQUESTS = 4, 60


def burst(redis_url: str, tenant: str, seed: int, out: multiprocessing.Queue) -> None:
    rng = random.Random(seed)
    client = redis.Redis.from_url(redis_url)
    limiter = RedisLimiter(client)
    results = []
    for _ in range(REQUESTS):
        key = rng.choice(["key_budgeted", "key_plain"])
        tokens = rng.randint(3, 25)
        ticket = Ticket(tenant_id=tenant, key_id=key, key_expires_ms=0, limits=LIMITS, tokens=tokens,
                        request_id=uuid.uuid4().hex, month=MONTH, pricing=PRICING)
        decision = limiter.admit(ticket)
        charge = decision.admitted and rng.random() < 0.8
        if decision.admitted:
            event = UsageEvent(request_id=ticket.request_id, tenant_id=tenant, key_id=key, model="m",
                               prompt_tokens=tokens, timestamp_ms=1, cost_nano=decision.cost_nano,
                               debits=decision.debits, tier_tokens=decision.tier_tokens)
            limiter.settle(ticket, decision, charge=charge, event=event if charge else None)
        results.append((key, tokens, str(decision.verdict), decision.cost_nano, list(decision.tier_tokens),
                        decision.debits, charge))
    out.put(results)
    client.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_no_interleaving_overshoots_money_or_repeats_an_alert(redis_url, seed):
    client = redis.Redis.from_url(redis_url)
    limiter = RedisLimiter(client)
    tenant = f"ten_{uuid.uuid4().hex[:10]}"
    seed_empty(limiter, tenant, month=MONTH)
    limiter.set_money(tenant, MoneySettings.of(BillingMode(mode="prepaid", low_balance_alert=Decimal("0.10")),
                                               TENANT_BUDGET))
    limiter.set_key_settings(tenant, "key_budgeted", KeySettings.of(LimitOverrides(), KEY_BUDGET))
    for grant_id, amount in CREDIT:
        limiter.add_grant(tenant, Grant(grant_id, 0, amount))

    queue: multiprocessing.Queue = multiprocessing.get_context("spawn").Queue()
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=burst, args=(redis_url, tenant, seed * 100 + i, queue)) for i in range(PROCESSES)]
    for worker in workers:
        worker.start()
    results = [r for _ in workers for r in queue.get(timeout=300)]
    for worker in workers:
        worker.join(timeout=30)

    charged = [r for r in results if r[6]]
    spent = sum(r[3] for r in charged)
    key_spent = sum(r[3] for r in charged if r[0] == "key_budgeted")
    credit = sum(amount for _, amount in CREDIT)
    # never past the credit, the tenant's budget or the key's: not by one nano unit
    assert spent <= credit and spent <= to_nano(TENANT_BUDGET.monthly_amount)
    assert key_spent <= to_nano(KEY_BUDGET.monthly_amount)
    # something was refused for money, so the limits were really reached
    verdicts = Counter(r[2] for r in results)
    assert verdicts[str(Verdict.CREDITS)] + verdicts[str(Verdict.BUDGET)] + verdicts[str(Verdict.KEY_BUDGET)] > 0
    # each cost is its tokens at their tiers' prices; a refused request took nothing
    for _, tokens, verdict, cost, tiers, debits, _ in results:
        if verdict == "ok":
            assert sum(tiers) == tokens and cost == tiers[0] * PRICING[0][1] + tiers[1] * PRICING[1][1]
            assert sum(int(part.split(":")[1]) for part in debits.split(",") if part) == cost
    # the books balance: counters and credit left are exactly what was charged
    month = client.hgetall(month_key(tenant, MONTH))
    assert int(month[b"cost"]) == int(month[b"costc"]) == spent
    assert int(month[b"tok"]) == sum(r[1] for r in charged)
    assert int(client.hget(key_month_key(tenant, "key_budgeted", MONTH), "costc") or 0) == key_spent
    assert client.xlen(usage_stream(tenant)) == len(charged)  # one usage event per charged request, none other
    left = sum(int(client.hget(f"{{t:{tenant}}}:credit", grant_id)) for grant_id, _ in CREDIT)
    assert left == credit - spent
    # every alert whose cause happened, once; none other
    events = [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in client.xrange(events_stream(tenant))]
    assert len({e["id"] for e in events}) == len(events)
    fired = Counter((e["type"], json.loads(e["data"]).get("scope"), json.loads(e["data"]).get("threshold"))
                    for e in events if e["type"] == "budget.threshold_crossed")
    expected = {("budget.threshold_crossed", "tenant", fraction) for level, fraction in alert_levels(TENANT_BUDGET)
                if spent >= level}
    expected |= {("budget.threshold_crossed", "key", fraction) for level, fraction in alert_levels(KEY_BUDGET)
                 if key_spent >= level}
    assert set(fired) == expected and all(n == 1 for n in fired.values())
    lows = [e for e in events if e["type"] == "credits.low"]
    assert len(lows) == (1 if credit - spent < LOW else 0)
    client.close()
