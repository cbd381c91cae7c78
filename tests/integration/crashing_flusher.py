"""A real flusher process for the fault-injection tests, configured from the environment
like the scheduled function. With ``--crash-at POINT`` it SIGKILLs itself at that step of
its first batch: ``after_read`` (read, nothing written), ``mid_commit`` (half of the batch
written), ``after_commit`` (written, not acknowledged). Production code has no such hook:
the crash goes in through the flusher's ``checkpoint`` callback.

    python -m tests.integration.crashing_flusher [--crash-at POINT] [--loop SECONDS]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time

from gateway.domain.usage import UsageEvent
from gateway.wiring import Container

POINTS = ("after_read", "mid_commit", "after_commit")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--crash-at", choices=POINTS)
    parser.add_argument("--loop", type=float, default=0.0)
    args = parser.parse_args()
    container = Container()
    flusher = container.flusher

    def checkpoint(point: str, events: list[UsageEvent]) -> None:
        if args.crash_at == "mid_commit" and point == "before_commit":
            container.usage.record_usage(events[: len(events) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        if point == args.crash_at:
            os.kill(os.getpid(), signal.SIGKILL)

    if args.crash_at:
        flusher.checkpoint = checkpoint
    while True:
        outcome = flusher.flush()
        print(json.dumps(outcome.__dict__), flush=True)
        if not args.loop:
            return 1 if outcome.errors else 0
        time.sleep(args.loop)


if __name__ == "__main__":
    raise SystemExit(main())
