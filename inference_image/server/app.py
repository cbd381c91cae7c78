"""Transport: the HTTP routes (SageMaker's /ping and /invocations, OpenAI's /v1/embeddings,
Prometheus' /metrics), body limits and the single error-to-response mapping."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from inference_image import EMBEDDING_DIM, MODEL_NAME, TOKENIZER_FILE
from inference_image.server import schemas
from inference_image.server.batcher import Batcher
from inference_image.server.config import Settings
from inference_image.server.errors import (
    InferenceError,
    InvalidRequestError,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
    UnavailableError,
    error_response,
)
from inference_image.server.metrics import Metrics
from inference_image.server.session import OnnxSession
from inference_image.tokenizer import load_tokenizer, truncating

log = logging.getLogger("inference_image.server")

TIMEOUT_HEADER = "x-maas-timeout-ms"  # optional per-request deadline, capped by the setting


class State:
    """Everything the routes share; built once per app."""

    def __init__(self, settings: Settings, session: OnnxSession) -> None:
        self.settings = settings
        self.session = session
        self.metrics = Metrics()
        self.batcher: Batcher | None = None
        self.tokenizer: Any = None
        self.truncating_tokenizer: Any = None
        self.vocab_size = 0
        self.ready = False
        self.draining = False
        self.load_error: str | None = None

    def load(self) -> None:
        """Blocking: tokenizer + session.initialize() (warm-up included)."""
        tok_path = Path(self.settings.model_dir) / TOKENIZER_FILE
        self.tokenizer = load_tokenizer(tok_path)
        self.truncating_tokenizer = truncating(self.tokenizer, self.settings.max_tokens)
        self.vocab_size = self.tokenizer.get_vocab_size()
        provider = self.session.initialize()
        self.metrics.provider.labels(provider).set(1)

    def require_ready(self) -> Batcher:
        if self.draining:
            raise UnavailableError("server is shutting down", code="shutting_down")
        if not self.ready or self.batcher is None:
            raise UnavailableError("model is loading" if self.load_error is None
                                   else f"model failed to load: {self.load_error}",
                                   code="model_loading")
        return self.batcher


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise PayloadTooLargeError(f"request body exceeds {limit} bytes")
        except ValueError:
            raise InvalidRequestError("invalid Content-Length header") from None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"request body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _timeout_s(request: Request, settings: Settings) -> float:
    cap = settings.request_timeout_ms
    raw = request.headers.get(TIMEOUT_HEADER)
    if raw is not None:
        try:
            asked = float(raw)
        except ValueError:
            raise InvalidRequestError(f"invalid {TIMEOUT_HEADER} header",
                                      param=TIMEOUT_HEADER) from None
        if asked <= 0:
            raise InvalidRequestError(f"{TIMEOUT_HEADER} must be > 0", param=TIMEOUT_HEADER)
        cap = min(cap, asked)
    return cap / 1000.0


def _cost_headers(tokens: int, result: Any) -> dict[str, str]:
    return {
        "x-compute-tokens": str(tokens),
        "x-queue-time-ms": f"{result.queue_s * 1000:.2f}",
        "x-compute-time-ms": f"{result.compute_s * 1000:.2f}",
    }


Handler = Callable[[Request, State], Awaitable[Response]]


def _route(name: str, handler: Handler, state: State) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a handler: per-route request/error counts, total latency, error mapping."""

    async def endpoint(request: Request) -> Response:
        t0 = time.perf_counter()
        try:
            response = await handler(request, state)
        except InferenceError as exc:
            state.metrics.errors.labels(exc.code or exc.type).inc()
            response = error_response(exc)
        state.metrics.requests.labels(name, str(response.status_code)).inc()
        state.metrics.observe_stage(f"total_{name}", time.perf_counter() - t0)
        return response

    return endpoint


async def ping(request: Request, state: State) -> Response:
    state.require_ready()
    return JSONResponse({"status": "ok", "model": MODEL_NAME,
                         "provider": state.session.provider})


async def _embed(request: Request, state: State, ids: list[list[int]]) -> tuple[np.ndarray, Any]:
    batcher = state.require_ready()
    timeout = _timeout_s(request, state.settings)
    state.metrics.in_flight.inc()
    try:
        result = await batcher.submit(ids, timeout)
    finally:
        state.metrics.in_flight.dec()
    state.metrics.observe_stage("queue", result.queue_s)
    state.metrics.observe_stage("compute", result.compute_s)
    return result.embeddings, result


async def _read_json(request: Request, state: State) -> dict[str, Any]:
    state.require_ready()
    t0 = time.perf_counter()
    body = await read_body(request, state.settings.max_body_bytes)
    t1 = time.perf_counter()
    data = schemas.parse_json_object(body)
    state.metrics.observe_stage("read", t1 - t0)
    state.metrics.observe_stage("parse", time.perf_counter() - t1)
    return data


async def invocations(request: Request, state: State) -> Response:
    data = await _read_json(request, state)
    s = state.settings
    ids = schemas.parse_invocations(data, vocab_size=state.vocab_size, max_items=s.max_items,
                                    max_tokens=s.max_tokens)
    tokens = sum(len(x) for x in ids)
    emb, result = await _embed(request, state, ids)
    t0 = time.perf_counter()
    body = schemas.invocations_body(emb, tokens)
    state.metrics.observe_stage("serialize", time.perf_counter() - t0)
    return Response(body, media_type="application/json", headers=_cost_headers(tokens, result))


async def embeddings(request: Request, state: State) -> Response:
    data = await _read_json(request, state)
    s = state.settings
    req = schemas.parse_embeddings(data, vocab_size=state.vocab_size, max_items=s.max_items)
    if req.texts is not None:
        t0 = time.perf_counter()
        tok = state.truncating_tokenizer if req.truncate else state.tokenizer
        if len(req.texts) > 8:
            encodings = await asyncio.to_thread(tok.encode_batch, req.texts)
        else:
            encodings = tok.encode_batch(req.texts)
        ids = [e.ids for e in encodings]
        state.metrics.observe_stage("tokenize", time.perf_counter() - t0)
    else:
        assert req.ids is not None
        ids = [x[: s.max_tokens] for x in req.ids] if req.truncate else req.ids
    if not req.truncate:
        for n, item in enumerate(ids):
            if len(item) > s.max_tokens:
                raise InvalidRequestError(
                    f"'input[{n}]' has {len(item)} tokens; the model's limit is "
                    f"{s.max_tokens} (send \"truncate\": true to cut it)",
                    param=f"input[{n}]", code="context_length_exceeded")
    tokens = sum(len(x) for x in ids)
    emb, result = await _embed(request, state, ids)
    t0 = time.perf_counter()
    body = schemas.embeddings_body(emb, tokens, req.encoding_format)
    state.metrics.observe_stage("serialize", time.perf_counter() - t0)
    return Response(body, media_type="application/json", headers=_cost_headers(tokens, result))


async def models(request: Request, state: State) -> Response:
    return JSONResponse({"object": "list", "data": [
        {"id": MODEL_NAME, "object": "model", "created": 0, "owned_by": "sentence-transformers"}
    ]})


async def metrics(request: Request, state: State) -> Response:
    state.metrics.ready.set(1 if state.ready and not state.draining else 0)
    return Response(state.metrics.render(), media_type=state.metrics.content_type)


def _counted(request: Request, error: InferenceError) -> Response:
    state = getattr(request.app.state, "maas", None)
    if state is not None:
        state.metrics.errors.labels(error.code or error.type).inc()
    return error_response(error)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return _counted(request, NotFoundError(f"no route {request.method} {request.url.path}"))
    if exc.status_code == 405:
        return _counted(request, MethodNotAllowedError(
            f"method {request.method} is not allowed on {request.url.path}"))
    return _counted(request, InvalidRequestError(str(exc.detail)))


async def _unhandled(request: Request, exc: Exception) -> Response:
    log.error("unhandled %s on %s", type(exc).__name__, request.url.path, exc_info=exc)
    return _counted(request, InferenceError("internal server error"))


def create_app(settings: Settings, session: OnnxSession | None = None) -> Starlette:
    """The ASGI app. The model loads in the background: /ping says 503 until it is warm."""
    session = session or OnnxSession(settings.model_dir, providers=settings.providers,
                                     intra_op_threads=settings.intra_op_threads,
                                     max_batch_items=settings.max_batch_items)
    state = State(settings, session)

    async def load() -> None:
        try:
            await asyncio.to_thread(state.load)
        except Exception as exc:  # noqa: BLE001 - reported by /ping and the log
            state.load_error = f"{type(exc).__name__}: {exc}"
            log.error("model failed to load: %s", state.load_error)
            return
        overhead = settings.call_overhead_tokens
        if overhead < 0:  # ~1 ms of model time: a few dozen tokens on a CPU, ~1k on a GPU
            overhead = 32 if session.provider == "CPUExecutionProvider" else 1024
        state.batcher = Batcher(
            session.execute, dim=EMBEDDING_DIM, max_batch_tokens=settings.max_batch_tokens,
            max_batch_items=settings.max_batch_items, max_wait_s=settings.max_wait_ms / 1000,
            max_queue=settings.max_queue, metrics=state.metrics,
            call_overhead_tokens=overhead)
        state.batcher.start()
        state.ready = True
        state.metrics.ready.set(1)
        log.info("ready on %s (%s)", session.provider, settings.model_dir)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        loader = asyncio.create_task(load())
        yield
        state.draining = True
        loader.cancel()
        if state.batcher is not None:
            drained = await state.batcher.drain(settings.drain_timeout_s)
            log.info("drained (%s)", "complete" if drained else "timed out")
        await asyncio.to_thread(session.finalize)

    routes = [
        Route("/ping", _route("ping", ping, state), methods=["GET"]),
        Route("/invocations", _route("invocations", invocations, state), methods=["POST"]),
        Route("/v1/embeddings", _route("embeddings", embeddings, state), methods=["POST"]),
        Route("/v1/models", _route("models", models, state), methods=["GET"]),
        Route("/metrics", _route("metrics", metrics, state), methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={HTTPException: _http_error, Exception: _unhandled})
    app.state.maas = state
    return app
