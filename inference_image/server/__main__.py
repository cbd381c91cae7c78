"""``python -m inference_image.server``: the container entrypoint and the local process.

HOST (default 127.0.0.1; the image sets 0.0.0.0), PORT (8080), MAAS_MODEL_DIR (.maas/model);
the other settings are in ``inference_image.server.config``. SIGTERM stops accepting
connections, answers 503 on /ping, finishes in-flight requests (MAAS_DRAIN_TIMEOUT_S, 30 s)
and exits 0; a second SIGINT exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from inference_image import MODEL_FILE, TOKENIZER_FILE
from inference_image.server.app import App, create_app
from inference_image.server.config import Settings
from inference_image.server.http import HttpServer

log = logging.getLogger("inference_image.server")


async def _serve(app: App, settings: Settings) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = 0

    def on_signal(sig: signal.Signals) -> None:
        nonlocal signals
        signals += 1
        if signals > 1 and sig == signal.SIGINT:
            os._exit(1)
        log.info("%s: draining", sig.name)
        app.begin_drain()
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    server = HttpServer(app.handle, app.on_error, max_body_bytes=settings.max_body_bytes)
    await server.start(settings.host, settings.port)
    log.info("listening on http://%s:%d", settings.host, server.port)
    await app.start()
    await stop.wait()
    await server.shutdown(app.drain, timeout_s=settings.drain_timeout_s)
    await asyncio.to_thread(app.finalize)


def serve(settings: Settings, session: Any = None) -> int:
    """Run the server until SIGTERM (``session``: see ``create_app``)."""
    app = create_app(settings, session)
    # A thread waiting for the GIL asks for it after this long (default 5 ms): the event loop
    # and the express lane should not wait that long behind a lane thread's Python work.
    sys.setswitchinterval(0.001)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is in the serve extra (not on Windows)
        asyncio.run(_serve(app, settings))
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_serve(app, settings))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "serve":  # `docker run image serve` (SageMaker) passes it on
        args = args[1:]
    if args:
        print(f"usage: python -m inference_image.server [serve]\n{__doc__}", file=sys.stderr)
        return 2
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        print(f"invalid configuration: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    model_dir = Path(settings.model_dir)
    missing = [n for n in (MODEL_FILE, TOKENIZER_FILE) if not (model_dir / n).is_file()]
    if missing:
        print(f"model not found: {', '.join(missing)} missing in {model_dir.resolve()}; run "
              "`python -m inference_image.export` (or set MAAS_MODEL_DIR)", file=sys.stderr)
        return 1
    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
