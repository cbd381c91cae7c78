"""Webhook delivery benchmark (`python -m tests.performance.bench_webhooks`), on moto's
DynamoDB server and a receiver on 127.0.0.1; no model, no Redis.

1. Latency, stored -> received: events are stored one at a time while the delivery loop runs
   as on the local stack (a pass every 0.5 s); the time from the store call's return to the
   receiver having the request. The contract's local bound is 5 s.
   Peer: the same signed POST sent directly by the sender (no store, no outbox, no log).
2. DynamoDB requests per delivered event (one webhook): what the outbox, the delivery log and
   the claim cost (counted at botocore's before-send).
3. A receiver that hangs: the latency of another receiver's deliveries while it does.

Timings are noisy on a shared machine: the load average is printed beside them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _summary(name: str, values_s: list[float]) -> str:
    ms = [v * 1000 for v in values_s]
    return (f"{name:<34} n={len(ms):<4} p50={statistics.median(ms):8.1f} ms  p95={_percentile(ms, 0.95):8.1f} ms"
            f"  max={max(ms):8.1f} ms")


def main(argv: list[str] | None = None) -> int:
    from gateway.config import Settings
    from gateway.domain.events import Event, EventType, event_id
    from gateway.domain.scopes import Scope
    from gateway.domain.webhooks import signature
    from gateway.models.webhooks import CreateWebhook
    from gateway.wiring import Container
    from infra.local.services import create_table, free_port, moto_service
    from tests.integration.conftest import make_principal
    from tests.webhook_receiver import Receiver

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=40)
    args = parser.parse_args(argv)
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")
    for name, value in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        os.environ.setdefault(name, value)

    with tempfile.TemporaryDirectory() as tmp:
        moto = moto_service(free_port(), Path(tmp)).start()
        receivers: list[Receiver] = []
        stop = threading.Event()
        c: Any = None
        try:
            settings = Settings(table_name=f"bench-{uuid.uuid4().hex[:8]}", key_pepper="bench",
                                dynamodb_endpoint=f"http://127.0.0.1:{moto.port}", webhook_allow_local_http=True,
                                webhook_timeout_s=2.0)
            c = Container(settings)
            create_table(c.dynamodb, settings.table_name)
            calls: Counter[str] = Counter()

            def count(request: Any, **_: Any) -> None:
                target = request.headers.get("X-Amz-Target", b"")
                calls[(target.decode() if isinstance(target, bytes) else target).rsplit(".", 1)[-1]] += 1

            c.dynamodb.meta.events.register("before-send.dynamodb.*", count)
            admin = make_principal(c, scopes=(Scope.ADMIN,))[0]
            target = Receiver()
            receivers.append(target)
            webhook = c.webhook_service.create(CreateWebhook(url=target.url, events=["credits.low"]), admin, "bench")
            target.secret = webhook["secret"]
            worker = threading.Thread(target=c.webhook_worker.run_forever, args=(0.5, stop), daemon=True)
            worker.start()

            def event(n: int, tag: str) -> Event:
                return Event(id=event_id("bench", tag, str(n)), type=EventType.CREDITS_LOW, created=int(time.time()),
                             tenant_id="ten_bench", data={"n": n})

            # 1. stored -> received, one at a time
            latencies = []
            calls.clear()
            for n in range(args.events):
                c.event_log.record([event(n, "serial")])
                stored = time.monotonic()
                request = target.wait_for(n + 1, timeout_s=30)[-1]
                latencies.append(request.at - stored)
            time.sleep(0.6)  # the last attempt's log write
            per_event = {op: round(k / args.events, 1) for op, k in sorted(calls.items())}
            # peer: the same signed POST, sent directly
            direct = []
            body = b'{"id":"evt_direct"}'
            for _ in range(args.events):
                started = time.monotonic()
                c.webhook_sender.post(target.url, body, {"Content-Type": "application/json",
                                                         "Maas-Signature": signature("s", body, int(time.time()))})
                direct.append(time.monotonic() - started)

            # 3. with a receiver that hangs subscribed to the same events
            hanging = Receiver(hang_s=3.0)
            receivers.append(hanging)
            c.webhook_service.create(CreateWebhook(url=hanging.url, events=["credits.low"]), admin, "bench")
            beside_hang = []
            before = len(target.received)
            for n in range(args.events // 2):
                c.event_log.record([event(n, "hang")])
                stored = time.monotonic()
                request = target.wait_for(before + n + 1, timeout_s=30)[-1]
                beside_hang.append(request.at - stored)

            print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}  (cores: {os.cpu_count()})")
            print(_summary("stored -> received (loop 0.5 s)", latencies))
            print(_summary("peer: direct signed POST", direct))
            print(_summary("stored -> received, beside a hang", beside_hang))
            print(f"ratio p50 pipeline/direct: {statistics.median(latencies) / statistics.median(direct):.0f}x "
                  f"(each event is stored just after a pass, so it waits out the loop's whole 0.5 s interval)")
            print(f"DynamoDB requests per delivered event (1 webhook): {per_event} "
                  f"= {sum(per_event.values()):.1f}")
        finally:
            stop.set()
            if c is not None:
                c.delivery_pool.drain(timeout_s=5)
            for r in receivers:
                r.close()
            moto.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
