"""A real dispatcher process for the outbox tests, configured from the environment like the
delivery function. It stores ``--events`` events (ids derived from ``--seed``), then SIGKILLs
itself at ``--crash-at``: ``stored`` (stored, never dispatched), ``after_read`` (taken from
the outbox, not published) or ``after_publish`` (published, still in the outbox). The crash
goes in through the dispatcher's ``checkpoint`` callback.

    python -m tests.integration.crashing_dispatcher --seed S --events N --crash-at POINT
"""

from __future__ import annotations

import argparse
import os
import signal
import time

from gateway.domain.events import Event, EventType, event_id
from gateway.wiring import Container

POINTS = ("stored", "after_read", "after_publish")


def events_for(seed: str, count: int) -> list[Event]:
    return [Event(id=event_id("crash-test", seed, str(n)), type=EventType.CREDITS_LOW, created=int(time.time()),
                  tenant_id="ten_crash", data={"n": n}) for n in range(count)]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", required=True)
    parser.add_argument("--events", type=int, default=3)
    parser.add_argument("--crash-at", choices=POINTS, required=True)
    args = parser.parse_args()
    container = Container()
    events = events_for(args.seed, args.events)
    container.event_log.record(events)
    if args.crash_at == "stored":
        os.kill(os.getpid(), signal.SIGKILL)

    def checkpoint(point: str, batch: list[Event]) -> None:
        if point == args.crash_at:
            if point == "after_publish":
                container.delivery_pool.drain(timeout_s=5)  # the attempts went out; only the outbox marker did not
            os.kill(os.getpid(), signal.SIGKILL)

    container.dispatcher.checkpoint = checkpoint
    container.dispatcher.dispatch_pending()
    return 1  # never reached: the checkpoint kills the process


if __name__ == "__main__":
    raise SystemExit(main())
