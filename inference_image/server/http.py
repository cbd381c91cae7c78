"""Transport: a small HTTP/1.1 server on asyncio and httptools (the parser under uvicorn).

Why not uvicorn + Starlette: their per-request machinery (ASGI scope, receive/send
coroutines, Request/Response objects) cost ~70 us of CPU per request before any work on this
machine, half the budget of the whole serving path; this server costs ~13 us. It does only
what the container needs: keep-alive, pipelining (answered in order), Content-Length and
chunked request bodies (httptools decodes them), ``Expect: 100-continue``, a body limit
answered from Content-Length before the body is read, idle connections closed after
``keep_alive_s``, and a drain on shutdown.

A handler gets a ``Request`` and returns a ``Response``, or a ``Deferred`` (a future and how
to render its result) for work done elsewhere; when the client disconnects first, the future
is cancelled, which is how the batcher learns that nobody waits for that request.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import httptools

from inference_image.server.errors import InferenceError, InvalidRequestError, PayloadTooLargeError, error_body

log = logging.getLogger("inference_image.http")

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}


@dataclass(slots=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes = b""
    received: float = 0.0  # time.perf_counter() when the body was complete


@dataclass(slots=True)
class Response:
    status: int = 200
    body: bytes | bytearray | memoryview = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


def error_response(exc: InferenceError) -> Response:
    """The one place an error becomes a response: its status, its headers, its OpenAI-shaped body."""
    return Response(exc.status, error_body(exc), "application/json", list(exc.headers().items()))


@dataclass(slots=True)
class Deferred:
    """An answer that comes later: ``render(future.result())``, or ``on_error(exception)``."""

    future: asyncio.Future[Any]
    render: Callable[[Any], Response]


Handler = Callable[[Request], "Response | Deferred"]
ErrorHandler = Callable[[Request, BaseException], Response]


class _Connection(asyncio.Protocol):
    __slots__ = ("server", "transport", "parser", "url", "headers", "chunks", "size",
                 "queue", "current", "closing", "last_active", "paused")

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: dict[str, str] = {}
        self.chunks: list[bytes] = []
        self.size = 0
        self.queue: deque[tuple[Request, bool]] = deque()  # parsed, waiting for their turn
        self.current: Deferred | None = None  # the request being answered
        self.closing = False
        self.paused = False
        self.last_active = time.monotonic()

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.closing = True
        self.queue.clear()
        if self.current is not None and not self.current.future.done():
            self.current.future.cancel()  # the client left: drop its work
        self.current = None

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.last_active = time.monotonic()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(InvalidRequestError("protocol upgrades are not supported"))
        except httptools.HttpParserError as exc:
            if not self.closing:
                self._fail(InvalidRequestError(f"malformed HTTP request: {exc}"))

    # -- httptools callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = {}
        self.chunks = []
        self.size = 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        old = self.headers.get(key)
        self.headers[key] = text if old is None else f"{old}, {text}"

    def on_headers_complete(self) -> None:
        declared = self.headers.get("content-length")
        if declared is not None:
            try:
                too_large = int(declared) > self.server.max_body_bytes
            except ValueError:
                too_large = False  # the parser itself rejects a malformed length
            if too_large:
                # Answered without reading the body, then closed: the rest never gets read.
                self._fail(PayloadTooLargeError(
                    f"request body exceeds {self.server.max_body_bytes} bytes"))
                return
        if self.headers.get("expect", "").lower() == "100-continue" and self.transport:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self.closing:
            return
        self.size += len(body)
        if self.size > self.server.max_body_bytes:
            self._fail(PayloadTooLargeError(
                f"request body exceeds {self.server.max_body_bytes} bytes"))
            return
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        if self.closing:
            return
        body = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        self.chunks = []
        path = self.url.split(b"?", 1)[0].decode("latin-1")
        request = Request(self.parser.get_method().decode("latin-1"), path, self.headers, body,
                          time.perf_counter())
        keep_alive = self.parser.should_keep_alive()
        if self.current is None and not self.queue:
            self._dispatch(request, keep_alive)
        else:  # pipelined behind one still being answered
            self.queue.append((request, keep_alive))
            if len(self.queue) >= 16 and self.transport and not self.paused:
                self.transport.pause_reading()
                self.paused = True

    # -- answering -------------------------------------------------------------------------
    def _dispatch(self, request: Request, keep_alive: bool) -> None:
        server = self.server
        try:
            result = server.handler(request)
        except Exception as exc:  # noqa: BLE001 - the error handler decides what it means
            result = server.on_error(request, exc)
        if isinstance(result, Response):
            self._write(result, keep_alive)
            return
        self.current = result
        result.future.add_done_callback(
            lambda future: self._settle(request, result, future, keep_alive))

    def _settle(self, request: Request, deferred: Deferred, future: asyncio.Future[Any],
                keep_alive: bool) -> None:
        if self.current is not deferred:
            return  # the connection was lost meanwhile
        self.current = None
        if future.cancelled():
            return
        exc = future.exception()
        try:
            response = (deferred.render(future.result()) if exc is None
                        else self.server.on_error(request, exc))
        except Exception as error:  # noqa: BLE001
            response = self.server.on_error(request, error)
        self._write(response, keep_alive)
        while self.queue and self.current is None and not self.closing:
            next_request, next_keep_alive = self.queue.popleft()
            self._dispatch(next_request, next_keep_alive)
        if self.paused and len(self.queue) < 16 and self.transport and not self.closing:
            self.transport.resume_reading()
            self.paused = False

    def _write(self, response: Response, keep_alive: bool) -> None:
        transport = self.transport
        if transport is None or self.closing:
            return
        keep_alive = keep_alive and not self.server.draining
        body = response.body
        head = [b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n" % (
            response.status, _REASONS.get(response.status, b"Unknown"),
            response.content_type.encode("latin-1"), len(body))]
        for name, value in response.headers:
            head.append(f"{name}: {value}\r\n".encode("latin-1"))
        if not keep_alive:
            head.append(b"connection: close\r\n")
        head.append(b"\r\n")
        if len(body) < 65536:
            head.append(bytes(body))
            transport.write(b"".join(head))
        else:  # large vectors: no copy into one buffer
            transport.writelines([b"".join(head), body])
        self.last_active = time.monotonic()
        if not keep_alive:
            self.closing = True
            transport.close()  # after the buffered answer is sent

    def _fail(self, error: InferenceError) -> None:
        """A request that cannot be read: answer and close the connection."""
        self._write(self.server.on_error(Request("", "", {}), error), keep_alive=False)
        self.closing = True

    @property
    def idle(self) -> bool:
        return self.current is None and not self.queue


class HttpServer:
    """``await start(host, port)``; ``await shutdown(drain)`` stops listening, closes idle
    connections, lets ``drain`` finish in-flight work, then closes the rest."""

    def __init__(self, handler: Handler, on_error: ErrorHandler, *, max_body_bytes: int,
                 keep_alive_s: float = 75.0) -> None:
        self.handler = handler
        self.on_error = on_error
        self.max_body_bytes = max_body_bytes
        self.keep_alive_s = keep_alive_s
        self.connections: set[_Connection] = set()
        self.draining = False
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int, backlog: int = 2048,
                    sock: socket.socket | None = None) -> None:
        """Listen on ``host:port``, or on ``sock`` (a listening socket shared by workers)."""
        loop = asyncio.get_running_loop()
        if sock is not None:
            self._server = await loop.create_server(lambda: _Connection(self), sock=sock,
                                                    backlog=backlog)
        else:
            self._server = await loop.create_server(lambda: _Connection(self), host, port,
                                                    backlog=backlog, reuse_address=True)
        self._sweeper = loop.create_task(self._sweep())

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def _sweep(self) -> None:
        """Close keep-alive connections idle for longer than ``keep_alive_s``."""
        while True:
            await asyncio.sleep(min(5.0, self.keep_alive_s))
            cutoff = time.monotonic() - self.keep_alive_s
            for conn in list(self.connections):
                if conn.idle and conn.last_active < cutoff and conn.transport:
                    conn.transport.close()

    async def shutdown(self, drain: Callable[[], Any] | None = None,
                       timeout_s: float = 30.0) -> None:
        self.draining = True
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            if conn.idle and conn.transport:
                conn.transport.close()
        if drain is not None:
            await drain()
        # Let the last answers reach their sockets (each busy connection closes after its
        # answer: draining turns keep-alive off).
        deadline = time.monotonic() + min(timeout_s, 5.0)
        while time.monotonic() < deadline and any(not c.idle for c in self.connections):
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            if conn.transport:
                conn.transport.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
