"""Admission scripts vs round 1's, side by side in one redis-server (issue 22's Redis side).

Per request one admit and one settle that charges it: today's scripts (gateway/lua, money on)
for the tenant money makes most work for (graduated price, prepaid credit with a low-balance
alert, a soft budget with thresholds, a key with rates and a hard budget of its own) against
round 1's (tests/performance/round1: rate limits and quota only, no money), interleaved in
short rounds so drift on a shared machine hits both alike. Printed as ratios:

- pairs/s: admit+settle pairs per second, today's / round 1's (goal >= 1.0);
- server us per script call: INFO commandstats' cmdstat_evalsha usec_per_call, today's /
  round 1's (goal <= 1.5);
- writes per pair: the write commands the two scripts run on the success path (commandstats
  counts a script's own commands), each one a change MemoryDB commits with the script's entry.

    .venv/bin/python -m tests.performance.bench_admission_ref [--seconds 20] [--tree DIR]

``--tree DIR`` runs the scripts and limiter of another copy of gateway/ (e.g. an earlier
commit, ``git archive <commit> gateway | tar -x -C DIR``) against the same round-1 peer.
``--client`` picks how today's limiter talks to Redis (``wire``: pre-packed EVALSHA, the
default where the limiter has it; ``redis-py``: redis-py's Script).
"""

from __future__ import annotations

import argparse
import inspect
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def run(seconds: float, client_kind: str) -> dict[str, Any]:
    import redis

    from gateway.adapters.redis_store import RedisLimiter, usage_stream
    from gateway.domain.admission import Grant, KeySettings, MoneySettings, TenantState, Ticket, alert_levels
    from gateway.domain.plans import Budget, LimitOverrides, Limits
    from gateway.domain.usage import UsageEvent
    from infra.local.services import free_port, redis_service
    from tests.performance.bench_gateway import Round1Limiter
    from tests.performance.interleave import interleave

    limits = Limits(requests_per_minute=10**7, tokens_per_minute=10**9, monthly_tokens=10**13,
                    max_concurrent_requests=10**4)
    pricing = ((1_000_000, 20_000), (None, 10_000))  # 0.02 and then 0.01 per 1k tokens, in nano per token
    month = time.strftime("%Y-%m", time.gmtime())
    tenant, key = "ten_bench", "key_bench"
    budget = Budget(monthly_amount="1000000.00", hard=False, alert_thresholds=[0.5, 0.8, 1.0])
    key_budget = Budget(monthly_amount="100000.00", hard=True, alert_thresholds=[0.9])
    state = TenantState(
        tenant_id=tenant, month=month, suspended=False,
        money=MoneySettings(prepaid=True, budget_nano=10**15, hard=False, budget_text="1000000",
                            thresholds=alert_levels(budget), low_balance_nano=10**9),
        key_states={}, key_ids=[key], tokens=0, cost_nano=0, key_months={},
        key_settings={key: KeySettings(limits=LimitOverrides(requests_per_minute=10**6, tokens_per_minute=10**8),
                                       budget_nano=10**14, hard=True, budget_text="100000",
                                       thresholds=alert_levels(key_budget))},
        grants=[Grant("g_bench", 0, 10**15)], epoch="g_bench")

    with tempfile.TemporaryDirectory() as workdir:
        service = redis_service(free_port(), Path(workdir), Path(workdir)).start()
        try:
            client = redis.Redis(port=service.port)
            wire = {"wire": client_kind == "wire"} if "wire" in inspect.signature(RedisLimiter).parameters else {}
            limiter = RedisLimiter(client, **wire)
            limiter.seed(state, month_start_ms=0, month_end_ms=2**52)
            round1_limiter = Round1Limiter(client)

            def event(ticket: Ticket, cost: int = 0, debits: str = "", tiers: tuple[int, ...] = ()) -> UsageEvent:
                return UsageEvent(request_id=ticket.request_id, tenant_id=ticket.tenant_id, key_id=key,
                                  model="m", prompt_tokens=ticket.tokens, timestamp_ms=int(time.time() * 1000),
                                  cost_nano=cost, debits=debits, tier_tokens=tiers)

            def ticket(t: str) -> Ticket:
                return Ticket(tenant_id=t, key_id=key, key_expires_ms=0, limits=limits, tokens=12,
                              request_id=uuid.uuid4().hex, month=month, pricing=pricing)

            def today() -> None:
                t = ticket(tenant)
                decision = limiter.admit(t)
                assert decision.admitted, decision
                limiter.settle(t, decision, charge=True, event=event(t, decision.cost_nano, decision.debits,
                                                                      decision.tier_tokens))

            def round1() -> None:
                t = ticket("ten_round1")
                fields = [part for pair in event(t).to_fields().items() for part in pair]
                round1_limiter.request("ten_round1", t, fields)

            writes = {name for name, info in client.command().items() if "write" in info["flags"]}
            tallies = interleave(client, {"today": today, "round1": round1}, seconds, rounds=10,
                                 writes=frozenset(writes),
                                 before_slice=lambda: (  # the streams stay short: the flusher would drain them
                                     client.xtrim(usage_stream(tenant), maxlen=1000, approximate=True),
                                     client.xtrim(usage_stream("ten_round1"), maxlen=1000, approximate=True)))
            apart = _each_script_alone(client, ticket, tenant, limiter, event)
        finally:
            service.stop()
    rate = {n: tally.rate for n, tally in tallies.items()}
    server = {n: tally.us_per_call for n, tally in tallies.items()}
    return {"pairs_per_s": rate, "server_us_per_call": server,
            "writes_per_pair": {n: tally.writes / tally.count for n, tally in tallies.items()},
            "pairs_ratio": rate["today"] / rate["round1"], "server_ratio": server["today"] / server["round1"],
            "apart_us": apart}


def _each_script_alone(client: Any, ticket: Callable[[str], Any], tenant: str, limiter: Any,
                       event: Callable[..., Any], n: int = 2000) -> dict[str, float]:
    """Today's admit.lua and settle.lua apart: n admits, then their n settles, commandstats read
    after each (what docs/SCALE.md's admit_us and settle_us stand for)."""
    client.config_resetstat()
    admitted = [(t, limiter.admit(t)) for t in (ticket(tenant) for _ in range(n))]
    admit = client.info("commandstats")["cmdstat_evalsha"]["usec_per_call"]
    client.config_resetstat()
    for t, decision in admitted:
        limiter.settle(t, decision, charge=True, event=event(t, decision.cost_nano, decision.debits,
                                                             decision.tier_tokens))
    settle = client.info("commandstats")["cmdstat_evalsha"]["usec_per_call"]
    return {"admit": admit, "settle": settle}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--tree", type=Path, help="a directory holding another copy of gateway/")
    parser.add_argument("--client", choices=("wire", "redis-py"), default="wire")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if args.tree:
        sys.path.insert(0, str(args.tree.resolve()))
    report = run(args.seconds, args.client)
    import gateway

    print(f"gateway from {Path(gateway.__file__).parent}, client {args.client}")
    for name in ("today", "round1"):
        print(f"  {name:7s} {report['pairs_per_s'][name]:8.0f} pairs/s  "
              f"{report['server_us_per_call'][name]:6.1f} server us/call  "
              f"{report['writes_per_pair'][name]:5.2f} writes/pair")
    print(f"  pairs/s today/round1 {report['pairs_ratio']:.2f}x (goal >= 1.0), "
          f"server us today/round1 {report['server_ratio']:.2f}x (goal <= 1.5)")
    print(f"  today's scripts apart, server us/call: admit {report['apart_us']['admit']:.1f}, "
          f"settle {report['apart_us']['settle']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
