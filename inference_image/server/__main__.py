"""``python -m inference_image.server``: the container entrypoint and the local process.

HOST (default 127.0.0.1; the image sets 0.0.0.0), PORT (8080); the models: every one of the
catalogue (gateway/assets/models.json) or those MAAS_MODELS lists, each from its artifact dir
(MAAS_MODEL_ROOT/<id> in the image; MAAS_MODEL_DIR for the first); the other settings are in
``inference_image.server.config``. SIGTERM stops accepting connections, answers 503 on /ping,
finishes in-flight requests (MAAS_DRAIN_TIMEOUT_S, 30 s) and exits 0; a second SIGINT exits at once.

MAAS_WORKERS=N (default 1) pre-forks N server processes on one listening socket, each with
its own model sessions (loaded after the fork: no CUDA context crosses it) and its own
batcher: one event loop serves ~10k small requests/s, so a GPU that computes more needs
several. The parent forwards SIGTERM and exits 0 when every worker drained.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from inference_image import MODEL_FILE, TOKENIZER_FILE
from inference_image.server.app import App, create_app
from inference_image.server.config import Settings
from inference_image.server.http import HttpServer

log = logging.getLogger("inference_image.server")


async def _serve(app: App, settings: Settings, sock: socket.socket | None = None) -> None:
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
    if sock is None:  # alone: listen at once, /ping says 503 while the model loads
        await server.start(settings.host, settings.port)
        await app.start()
    else:  # one of several workers: accept only once loaded, the others may be serving
        await app.start()
        assert app.loaded is not None
        await app.loaded.wait()
        await server.start(settings.host, settings.port, sock=sock)
    log.info("listening on http://%s:%d (pid %d)", settings.host, server.port, os.getpid())
    await stop.wait()
    await server.shutdown(app.drain, timeout_s=settings.drain_timeout_s)
    await asyncio.to_thread(app.finalize)


def serve(settings: Settings, session: Any = None) -> int:
    """Run the server until SIGTERM (``session``: see ``create_app``)."""
    if settings.workers > 1:
        return _prefork(settings, session)
    return _run(settings, session)


def _prefork(settings: Settings, session: Any) -> int:
    sock = socket.create_server((settings.host, settings.port), backlog=2048, reuse_port=False)
    sock.setblocking(False)
    children: dict[int, int] = {}
    for index in range(settings.workers):
        pid = os.fork()
        if pid == 0:  # a worker: only worker 0 prints the CloudWatch metric line
            os.environ["MAAS_WORKER_INDEX"] = str(index)
            code = 1
            try:
                code = _run(settings, session, sock)
            finally:
                os._exit(code)
        children[pid] = index
    sock.close()

    def forward(sig: int, _frame: Any) -> None:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    worst = 0
    while children:
        pid, status = os.wait()
        if pid not in children:
            continue
        del children[pid]
        code = os.waitstatus_to_exitcode(status)
        if code != 0 and worst == 0:  # one worker died: the container is not healthy
            log.error("worker %d exited with %d; stopping the others", pid, code)
            worst = code if code > 0 else 1
            forward(signal.SIGTERM, None)
    return worst


def _run(settings: Settings, session: Any, sock: socket.socket | None = None) -> int:
    app = create_app(settings, session)
    # A thread waiting for the GIL asks for it after this long (default 5 ms): the event loop
    # and the express lane should not wait that long behind a lane thread's Python work.
    sys.setswitchinterval(0.001)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is in the serve extra (not on Windows)
        asyncio.run(_serve(app, settings, sock))
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_serve(app, settings, sock))
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
    for model in settings.served():
        model_dir = Path(model.model_dir)
        missing = [n for n in (MODEL_FILE, TOKENIZER_FILE) if not (model_dir / n).is_file()]
        if missing:
            print(f"model {model.id} not found: {', '.join(missing)} missing in {model_dir.resolve()}; run "
                  "`python -m inference_image.export --all` (or set MAAS_MODEL_ROOT, MAAS_MODELS)",
                  file=sys.stderr)
            return 1
    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
