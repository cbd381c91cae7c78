"""``python -m inference_image.server``: the container entrypoint and the local process.

HOST (default 127.0.0.1; the image sets 0.0.0.0), PORT (8080), MAAS_MODEL_DIR (.maas/model);
the other settings are in ``inference_image.server.config``. SIGTERM stops accepting
connections, answers 503 on /ping, finishes in-flight requests (MAAS_DRAIN_TIMEOUT_S, 30 s)
and exits 0.
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from types import FrameType

import uvicorn

from inference_image import MODEL_FILE, TOKENIZER_FILE
from inference_image.server.app import create_app
from inference_image.server.config import Settings


class _Server(uvicorn.Server):
    """uvicorn, plus: mark the app draining at the first signal and exit 0 afterwards."""

    def __init__(self, config: uvicorn.Config, on_signal: callable) -> None:  # type: ignore[valid-type]
        super().__init__(config)
        self._on_signal = on_signal

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._on_signal()
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        self.should_exit = True  # not re-raised after shutdown: a drained exit is a clean exit


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
    app = create_app(settings)
    state = app.state.maas

    def on_signal() -> None:
        state.draining = True
        if state.batcher is not None:
            state.batcher.close()

    config = uvicorn.Config(app, host=settings.host, port=settings.port,
                            log_level=settings.log_level, access_log=False,
                            timeout_graceful_shutdown=int(settings.drain_timeout_s),
                            limit_concurrency=None, backlog=2048)
    server = _Server(config, on_signal)
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
