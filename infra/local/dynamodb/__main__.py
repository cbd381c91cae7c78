"""``python -m infra.local.dynamodb --host 127.0.0.1 --port 5100 --db .maas/dynamodb.sqlite3``"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path
from types import FrameType

from infra.local.dynamodb.server import log, serve, stop


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m infra.local.dynamodb",
                                     description="A local DynamoDB (JSON 1.0 protocol) backed by SQLite.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--db", type=Path, required=True, help="the SQLite database file (the whole state)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    server = serve(args.host, args.port, args.db)
    log.info("DynamoDB on http://%s:%d, database %s", args.host, server.server_address[1], args.db)
    done = threading.Event()

    def finish(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, finish)
    signal.signal(signal.SIGINT, finish)
    done.wait()
    stop(server)
    log.info("stopped")


if __name__ == "__main__":
    main()
