"""Transport: the routes (SageMaker's /ping and /invocations, OpenAI's /v1/embeddings,
Prometheus' /metrics) and the single error-to-response mapping.

``/invocations`` negotiates its formats: a body of ``application/vnd.maas.token-ids`` or JSON
``{"input_ids": [[...]]}``; an answer of ``application/vnd.maas.embeddings`` (float32, count,
dim and prompt_tokens inside: ``gateway.wire``) when the Accept header asks for it,
JSON ``{"embeddings", "prompt_tokens"}`` otherwise. The binary answer is written by the
model lane straight into the response buffer: no float leaves float32 on its way out.

Request metadata: ``X-Amzn-SageMaker-Custom-Attributes: tenant=<id>;timeout_ms=<n>`` (the one
channel SageMaker forwards), and the older ``x-maas-timeout-ms`` header; the deadline is the
smallest of those and ``MAAS_REQUEST_TIMEOUT_MS``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from typing import Any

import numpy as np

from gateway import wire
from inference_image.server import schemas
from inference_image.server.batcher import Batcher, Result, TokenBatch, lower_thread_priority
from inference_image.server.config import Settings
from inference_image.server.errors import (
    InferenceError,
    InvalidRequestError,
    MethodNotAllowedError,
    ModelNotFoundError,
    NotFoundError,
    UnavailableError,
)
from inference_image.server.http import Deferred, Request, Response, error_response
from inference_image.server.metrics import Metrics, gpu_active_line
from inference_image.server.models import Served
from inference_image.server.session import GPU_PROVIDERS, OnnxSession

log = logging.getLogger("inference_image.server")

TIMEOUT_HEADER = "x-maas-timeout-ms"  # optional per-request deadline, capped by the setting
EMF_INTERVAL_S = 60.0
ROUTE_NAMES = {"/ping": "ping", "/invocations": "invocations", "/v1/embeddings": "embeddings",
               "/v1/models": "models", "/metrics": "metrics"}


class App:
    """Everything the routes share, built once; ``handle`` is the HTTP server's handler."""

    def __init__(self, settings: Settings, sessions: list[Any]) -> None:
        self.settings = settings
        # In catalogue order; the first is the default model (a request that names none).
        self.served = {model.id: Served(model, session) for model, session in zip(settings.served(), sessions,
                                                                                  strict=True)}
        self.default = next(iter(self.served.values()))
        self.session = self.default.session
        self.metrics = Metrics()
        self.ready = False
        self.draining = False
        self.load_error: str | None = None
        self.not_serving: str | None = None  # why /ping refuses although the model loaded
        self._emf: asyncio.TimerHandle | None = None
        self.loaded: asyncio.Event | None = None  # set once loading succeeded or failed
        self.routes = {
            "/ping": ("GET", self.ping),
            "/invocations": ("POST", self.invocations),
            "/v1/embeddings": ("POST", self.embeddings),
            "/v1/models": ("GET", self.models),
            "/metrics": ("GET", self.metrics_route),
        }

    @property
    def batcher(self) -> Batcher | None:
        """The default model's batcher."""
        return self.default.batcher

    # -- lifecycle ---------------------------------------------------------------------------
    def _load(self) -> None:
        """Blocking: every model's tokenizer and session (warm-up and reference check)."""
        for served in self.served.values():
            self.metrics.provider.labels(served.load()).set(1)

    async def start(self) -> None:
        """Load the model in the background: /ping answers 503 until it is warm."""
        self.loaded = asyncio.Event()
        task = asyncio.get_running_loop().create_task(self._start())
        task.add_done_callback(lambda _: self.loaded.set())  # type: ignore[union-attr]

    async def _start(self) -> None:
        settings, session = self.settings, self.session
        try:
            if settings.express_tokens > 0 and settings.bulk_nice:
                # the bulk session's compute threads inherit a lower priority
                await _in_thread(self._load, nice=settings.bulk_nice)
            else:
                await asyncio.to_thread(self._load)
            if settings.express_tokens > 0:
                for served in self.served.values():
                    served.express = await asyncio.to_thread(served.session.open_lane)
        except Exception as exc:  # noqa: BLE001 - reported by /ping and the log
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.error("model failed to load: %s", self.load_error)
            self._emit_gpu_metric()
            return
        overhead = settings.call_overhead_tokens
        if overhead < 0:  # ~1 ms of model time: a few dozen tokens on a CPU, ~1k on a GPU
            overhead = 1024 if self.gpu_active else 32
        for served in self.served.values():  # one batcher (queue, lanes, token budget) per model
            served.batcher = Batcher(
                served.session.execute, dim=served.dimensions, max_batch_tokens=settings.max_batch_tokens,
                max_batch_items=settings.max_batch_items, max_wait_s=settings.max_wait_ms / 1000,
                max_queue=settings.max_queue, metrics=self.metrics, call_overhead_tokens=overhead,
                express=served.express, express_tokens=settings.express_tokens,
                quantum=served.max_tokens, bulk_nice=settings.bulk_nice)
            served.batcher.start()
        if settings.require_gpu and not self.gpu_active:
            self.not_serving = (
                f"MAAS_REQUIRE_GPU=true but the model runs on {session.provider}; GPU "
                f"providers tried: {session.tried or 'none available'}")
            log.error("not serving: %s", self.not_serving)
        self.ready = True
        self.metrics.ready.set(0 if self.not_serving else 1)
        log.info("ready on %s (%s), express lane %s", session.provider,
                 ", ".join(f"{s.id}: {s.setting.model_dir}" for s in self.served.values()),
                 f"<= {settings.express_tokens} tokens" if settings.express_tokens else "off")
        self._emit_gpu_metric()

    @property
    def gpu_active(self) -> bool:
        """Every model runs on a GPU provider that reproduced its reference vectors at start-up."""
        return all(s.session.provider in GPU_PROVIDERS and getattr(s.session, "reference_cosine", None) is not None
                   for s in self.served.values())

    def _emit_gpu_metric(self) -> None:
        """CloudWatch Embedded Metric Format on stdout: now and every minute (one worker)."""
        if os.environ.get("MAAS_WORKER_INDEX", "0") == "0":
            print(gpu_active_line(self.session.provider, self.gpu_active), flush=True)
        loop = asyncio.get_running_loop()
        self._emf = loop.call_later(EMF_INTERVAL_S, self._emit_gpu_metric)

    def begin_drain(self) -> None:
        self.draining = True
        for served in self.served.values():
            if served.batcher is not None:
                served.batcher.close()

    async def drain(self) -> None:
        if self._emf is not None:
            self._emf.cancel()
        batchers = [s.batcher for s in self.served.values() if s.batcher is not None]
        if batchers:
            done = await asyncio.gather(*(b.drain(self.settings.drain_timeout_s) for b in batchers))
            log.info("drained (%s)", "complete" if all(done) else "timed out")

    def finalize(self) -> None:
        for served in self.served.values():
            served.session.finalize()

    # -- dispatch ----------------------------------------------------------------------------
    def handle(self, request: Request) -> Response | Deferred:
        route = self.routes.get(request.path)
        if route is None:
            raise NotFoundError(f"no route {request.method} {request.path}")
        method, handler = route
        if request.method != method:
            raise MethodNotAllowedError(
                f"method {request.method} is not allowed on {request.path}")
        return handler(request)

    def on_error(self, request: Request, exc: BaseException) -> Response:
        if not isinstance(exc, InferenceError):
            log.error("unhandled %s on %s", type(exc).__name__, request.path, exc_info=exc)
            exc = InferenceError("internal server error")
        self.metrics.count_error(exc.code or exc.type, ROUTE_NAMES.get(request.path, "unknown"),
                                 exc.status)
        return error_response(exc)

    def require_ready(self, model: str | None = None) -> Served:
        """The named model (None: the default), ready to take work."""
        if self.draining:
            raise UnavailableError("server is shutting down", code="shutting_down")
        if not self.ready or self.default.batcher is None:
            raise UnavailableError("model is loading" if self.load_error is None
                                   else f"model failed to load: {self.load_error}",
                                   code="model_loading")
        if model is None:
            return self.default
        if not isinstance(model, str):
            raise InvalidRequestError("'model' must be a string", param="model")
        served = next((s for s in self.served.values() if model in s.setting.names), None)
        if served is None:
            raise ModelNotFoundError(f"the model '{model}' does not exist; this server serves "
                                     f"{', '.join(repr(m) for m in self.served)}", param="model")
        return served

    def _attributes(self, request: Request) -> dict[str, str]:
        raw = request.headers.get(wire.ATTRIBUTES_HEADER)
        return wire.parse_attributes(raw) if raw is not None else {}

    def _deadline_and_tenant(self, request: Request) -> tuple[float, str]:
        cap = self.settings.request_timeout_ms
        raw = request.headers.get(TIMEOUT_HEADER)
        fields = self._attributes(request)
        tenant = fields.get("tenant", "")
        if fields.get("priority") == "batch":  # a Batch API line: its own, background queue
            tenant = wire.BACKGROUND + tenant
        raw = fields.get("timeout_ms", raw)
        if raw is not None:
            try:
                asked = float(raw)
            except ValueError:
                raise InvalidRequestError(f"invalid request timeout {raw!r}",
                                          param=TIMEOUT_HEADER) from None
            if not asked > 0:
                raise InvalidRequestError("the request timeout must be > 0 ms",
                                          param=TIMEOUT_HEADER)
            cap = min(cap, asked)
        return cap / 1000.0, tenant

    # -- routes ------------------------------------------------------------------------------
    def ping(self, request: Request) -> Response:
        self.require_ready()
        if self.not_serving:
            raise UnavailableError(self.not_serving, code="gpu_required")
        return Response(200, schemas.dumps({
            "status": "ok", "model": self.default.id, "provider": self.session.provider,
            "models": [served.describe() for served in self.served.values()]}))

    def invocations(self, request: Request) -> Deferred:
        # The hop names the model in its custom attributes (gateway.wire); none: the default.
        served = self.require_ready(self._attributes(request).get("model"))
        batcher, s = served.batcher, self.settings
        assert batcher is not None
        if request.headers.get("content-type", "").startswith(wire.TOKEN_IDS_TYPE):
            batch = schemas.parse_token_ids(request.body, vocab_size=served.vocab_size,
                                            max_items=s.max_items, max_tokens=served.max_tokens)
        else:
            batch = schemas.parse_invocations(schemas.parse_json_object(request.body),
                                              vocab_size=served.vocab_size,
                                              max_items=s.max_items, max_tokens=served.max_tokens)
        timeout_s, tenant = self._deadline_and_tenant(request)
        tokens = batch.total
        if wire.EMBEDDINGS_TYPE in request.headers.get("accept", ""):
            # The lane writes the vectors straight into the response body, after its header.
            head, dim = wire.EMBEDDINGS_HEADER.size, served.dimensions
            body = bytearray(head + 4 * batch.count * dim)
            body[:head] = wire.embeddings_header(batch.count, dim, tokens)
            out = np.frombuffer(body, dtype="<f4", offset=head).reshape(batch.count, dim)
            future = batcher.enqueue(batch, timeout_s, tenant=tenant, out=out)
            return Deferred(future, lambda result: self._answer(
                request, "invocations", body, wire.EMBEDDINGS_TYPE, tokens, result))
        future = batcher.enqueue(batch, timeout_s, tenant=tenant)
        return Deferred(future, lambda result: self._answer(
            request, "invocations", schemas.invocations_body(result.embeddings, tokens),
            wire.JSON_TYPE, tokens, result))

    def embeddings(self, request: Request) -> Response | Deferred:
        data = schemas.parse_json_object(request.body)
        served = self.require_ready(data.get("model"))
        batcher, s = served.batcher, self.settings
        assert batcher is not None
        req = schemas.parse_embeddings(data, vocab_size=served.vocab_size, max_items=s.max_items,
                                       dimensions=served.dimensions)
        timeout_s, tenant = self._deadline_and_tenant(request)
        answer = lambda result: self._embeddings_answer(  # noqa: E731
            request, served.id, req.encoding_format, result)
        if req.texts is not None:
            tok = served.truncating_tokenizer if req.truncate else served.tokenizer
            if len(req.texts) > 8:  # long tokenizations leave the event loop free
                loop = asyncio.get_running_loop()
                future: asyncio.Future[Result] = loop.create_future()
                encoding = asyncio.ensure_future(asyncio.to_thread(tok.encode_batch, req.texts))

                def forward(done: asyncio.Future[Any]) -> None:
                    if future.cancelled():
                        return
                    try:
                        inner = self._enqueue_texts(served, done.result(), req.truncate,
                                                    timeout_s, tenant)
                    except BaseException as exc:  # noqa: BLE001 - reported on the future
                        future.set_exception(exc)
                        return
                    inner.add_done_callback(lambda f: _chain(f, future))
                    future.add_done_callback(lambda f: f.cancelled() and inner.cancel())

                encoding.add_done_callback(forward)
                return Deferred(future, answer)
            fut = self._enqueue_texts(served, tok.encode_batch(req.texts), req.truncate,
                                      timeout_s, tenant)
            return Deferred(fut, answer)
        assert req.ids is not None
        batch = req.ids.truncated(served.max_tokens) if req.truncate else req.ids
        _check_lengths(batch, served.max_tokens)
        fut = batcher.enqueue(batch, timeout_s, tenant=tenant)
        return Deferred(fut, answer)

    def _enqueue_texts(self, served: Served, encodings: list[Any], truncate: bool,
                       timeout_s: float, tenant: str) -> asyncio.Future[Result]:
        batch = TokenBatch.from_lists([e.ids for e in encodings])
        if not truncate:
            _check_lengths(batch, served.max_tokens)
        assert served.batcher is not None
        return served.batcher.enqueue(batch, timeout_s, tenant=tenant)

    def _embeddings_answer(self, request: Request, model: str, encoding_format: str,
                           result: Result) -> Response:
        tokens = result.tokens
        return self._answer(request, "embeddings",
                            schemas.embeddings_body(result.embeddings, tokens, encoding_format, model=model),
                            wire.JSON_TYPE, tokens, result)

    def _answer(self, request: Request, route: str, body: bytes | bytearray, content_type: str,
                tokens: int, result: Result) -> Response:
        self.metrics.observe_request(route, time.perf_counter() - request.received,
                                     result.queue_s, result.compute_s)
        return Response(200, body, content_type, [
            ("x-compute-tokens", str(tokens)),
            ("x-queue-time-ms", f"{result.queue_s * 1000:.2f}"),
            ("x-compute-time-ms", f"{result.compute_s * 1000:.2f}"),
        ])

    def models(self, request: Request) -> Response:
        return Response(200, schemas.dumps({"object": "list", "data": [
            {"id": served.id, "object": "model", "created": 0, "owned_by": "sentence-transformers",
             "dimensions": served.dimensions, "max_input_tokens": served.max_tokens}
            for served in self.served.values()]}))

    def metrics_route(self, request: Request) -> Response:
        self.metrics.ready.set(1 if self.ready and not self.draining and not self.not_serving
                               else 0)
        self.metrics.in_flight.set(sum(s.batcher.in_flight for s in self.served.values() if s.batcher))
        return Response(200, self.metrics.render(), self.metrics.content_type)


async def _in_thread(fn: Any, *, nice: int) -> None:
    """Run ``fn`` on a thread of its own with niceness ``nice`` (threads it starts, such as
    ONNX Runtime's intra-op pool, inherit it)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def run() -> None:
        lower_thread_priority(nice)
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            error = exc
            loop.call_soon_threadsafe(lambda: done.done() or done.set_exception(error))
        else:
            loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))

    threading.Thread(target=run, name="maas-load", daemon=True).start()
    await done


def _check_lengths(batch: TokenBatch, max_tokens: int) -> None:
    lengths = batch.lengths
    if max(lengths) > max_tokens:
        n = next(n for n, length in enumerate(lengths) if length > max_tokens)
        raise InvalidRequestError(
            f"'input[{n}]' has {lengths[n]} tokens; the model's limit is {max_tokens} "
            "(send \"truncate\": true to cut it)", param=f"input[{n}]",
            code="context_length_exceeded")


def _chain(source: asyncio.Future[Any], target: asyncio.Future[Any]) -> None:
    if target.done():
        return
    if source.cancelled():
        target.cancel()
    elif source.exception() is not None:
        target.set_exception(source.exception())  # type: ignore[arg-type]
    else:
        target.set_result(source.result())


def create_app(settings: Settings, session: Any = None) -> App:
    """The app on one ONNX session per served model (or, for the default model, ``session``:
    anything with the same methods, such as the null model of ``python -m inference_image.bench
    null``)."""
    sessions = [session if session is not None and index == 0 else
                OnnxSession(model.model_dir, providers=settings.providers,
                            intra_op_threads=settings.intra_op_threads,
                            max_batch_items=settings.max_batch_items,
                            dimensions=model.dimensions, max_tokens=model.max_tokens)
                for index, model in enumerate(settings.served())]
    return App(settings, sessions)
