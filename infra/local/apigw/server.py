"""The emulator's HTTP/1.1 server: reads requests, hands them to the Gateway, writes answers.

Whatever it refuses by itself is answered as API Gateway would, in OpenAI's error shape with
an x-request-id and a Content-Length, never as http.server's HTML and never echoing the
request: a malformed request line or a bad body framing (chunk size, Content-Length) is 400,
a request line over 64 KiB 414, headers over http.server's limits 431, an unknown method or
transfer coding 501, HTTP/2+ 505, a body over 10 MiB 413, a body that stops arriving 408.
After any of those the connection closes: where the next request starts is unknown."""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from infra.local.apigw import proxy
from infra.local.apigw.app import TEMPLATE, Gateway, build_app
from infra.local.apigw.pool import DEFAULT_MAX_COPIES
from infra.local.apigw.proxy import Response

LOG = logging.getLogger("maas.apigw")

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
DRAIN_FACTOR = 4  # a declared body up to 4x the limit is read and dropped, so the client sees the 413
MAX_CHUNK_LINE = 4096  # a chunk-size line with its extensions, or one trailer line
MAX_TRAILERS = 100
IDLE_TIMEOUT_S = 310.0  # a connection (or a body) silent this long is closed, as API Gateway does
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_DECIMAL = re.compile(r"[0-9]+")


class HttpError(Exception):
    """The request cannot be served as sent; the status says why (see proxy.own_error)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "maas-apigw"
    sys_version = ""
    server: _Server

    def setup(self) -> None:
        self.timeout = self.server.idle_timeout_s  # applied to the socket by StreamRequestHandler
        # Headers and body leave in separate writes: with Nagle's algorithm the body waits for
        # the client's delayed ACK of the headers, 40 ms on every keep-alive request.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().setup()

    # -- what http.server refuses by itself

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (400, 414, 431, 501, 505): our JSON with a fixed text,
        never its HTML page nor its message (which quotes the request line)."""
        if self.request_version == "HTTP/0.9":  # the request line was unreadable: answer in 1.1
            self.request_version = "HTTP/1.1"
        self._send(proxy.own_error(int(code)), close=True)

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if self.request_version == "HTTP/0.9":  # "GET /": API Gateway speaks HTTP/1.1
            self.send_error(400)
            return False
        return True

    def handle_expect_100(self) -> bool:
        try:
            framing, length = self._framing()
            if framing == "length" and length > self.server.app.max_body_bytes:
                raise HttpError(413)  # at once: the client waits for a 100 before sending
        except HttpError as error:
            self._send(proxy.own_error(error.status), close=True)
            return False
        return super().handle_expect_100()

    # -- the body (RFC 9112 section 6)

    def _framing(self) -> tuple[str, int]:
        """("chunked", 0), or ("length", n) with n = 0 when the request has no body."""
        codings = [c.strip().lower() for v in self.headers.get_all("Transfer-Encoding") or [] for c in v.split(",")]
        lengths = {v.strip() for h in self.headers.get_all("Content-Length") or [] for v in h.split(",")}
        if codings:
            if codings != ["chunked"]:
                raise HttpError(501)  # a coding we cannot undo (gzip, ...), or a malformed list
            if lengths:
                raise HttpError(400)  # both framings: how requests get smuggled
            return "chunked", 0
        if not lengths:
            return "length", 0
        if len(lengths) != 1:
            raise HttpError(400)
        (value,) = lengths
        if not _DECIMAL.fullmatch(value):
            raise HttpError(400)
        return "length", int(value) if len(value) <= 18 else 1 << 62

    def _read_body(self) -> bytes:
        limit = self.server.app.max_body_bytes
        framing, length = self._framing()
        if framing == "chunked":
            return self._read_chunked(limit)
        if length > limit:
            if length <= DRAIN_FACTOR * limit:  # read and drop it, so the client sees the 413
                while length > 0:
                    chunk = self.rfile.read(min(length, 1 << 16))
                    if not chunk:
                        break
                    length -= len(chunk)
            raise HttpError(413)
        body = self.rfile.read(length) if length else b""
        if len(body) < length:
            raise HttpError(400)  # the connection ended inside the body
        return body

    def _read_line(self) -> bytes:
        line = self.rfile.readline(MAX_CHUNK_LINE + 1)
        if not line.endswith(b"\n"):
            raise HttpError(400)  # too long, or the connection ended inside it
        return line

    def _read_chunked(self, limit: int) -> bytes:
        chunks, total = [], 0
        while True:
            size_field = self._read_line().split(b";", 1)[0].strip()
            if not _CHUNK_SIZE.fullmatch(size_field):
                raise HttpError(400)
            size = int(size_field, 16)
            if size == 0:
                break
            total += size
            if total > limit:
                raise HttpError(413)
            data = self.rfile.read(size)
            if len(data) < size or self._read_line() not in (b"\r\n", b"\n"):
                raise HttpError(400)
            chunks.append(data)
        for _ in range(MAX_TRAILERS):  # trailer fields are read and dropped, as API Gateway does
            if self._read_line() in (b"\r\n", b"\n"):
                return b"".join(chunks)
        raise HttpError(431)

    # -- one request

    def _dispatch(self) -> None:
        try:
            body = self._read_body()
        except HttpError as error:
            self._send(proxy.own_error(error.status), close=True)
            return
        except TimeoutError:
            self._send(proxy.own_error(408), close=True)
            return
        try:
            response = self.server.app.handle(
                self.command,
                self.path,
                list(self.headers.items()),
                body,
                source_ip=self.client_address[0],
                protocol=self.request_version,
                port=self.server.server_address[1],
            )
        except Exception:  # the gateway answers every handler failure itself; this is a bug here
            LOG.exception("emulator error")
            response = proxy.bad_gateway()
        self._send(response)

    def _send(self, response: Response, *, close: bool = False) -> None:
        try:
            self.send_response(response.status)
            for name, value in response.headers:
                if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            if close or self.close_connection:  # say so whenever this answer ends the connection
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(response.body)
        except ConnectionError:  # the client left before its answer
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        LOG.info("%s %s", self.address_string(), format % args)


for _m in HTTP_METHODS:
    setattr(_RequestHandler, f"do_{_m}", _RequestHandler._dispatch)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], app: Gateway, idle_timeout_s: float = IDLE_TIMEOUT_S) -> None:
        self.app = app
        self.idle_timeout_s = idle_timeout_s
        super().__init__(address, _RequestHandler)


def serve(
    app: Gateway,
    host: str = "127.0.0.1",
    port: int = 3000,
    *,
    block: bool = True,
    idle_timeout_s: float = IDLE_TIMEOUT_S,
) -> ThreadingHTTPServer:
    """Serve app over HTTP. port=0 picks a free port (see server.server_address). With
    block=False the server runs in a daemon thread; stop it with server.shutdown()."""
    server = _Server((host, port), app, idle_timeout_s)
    if block:
        try:
            server.serve_forever()
        finally:
            server.server_close()
    else:
        threading.Thread(target=server.serve_forever, name="apigw", daemon=True).start()
    return server


class ApiGatewayEmulator:
    """The emulator as a service the local stack starts and stops.

    `env`, when given, is merged into this process's environment before the first handler
    copy loads (handlers read their settings from the process environment)."""

    def __init__(
        self,
        port: int = 3000,
        workers: int = DEFAULT_MAX_COPIES,
        env: Mapping[str, str] | None = None,
        *,
        host: str = "127.0.0.1",
        template: str | Path = TEMPLATE,
        project_root: str | Path | None = None,
        stage: str = "local",
    ) -> None:
        self.host, self.port = host, port
        self.env = dict(env or {})
        self.app = build_app(template, project_root, workers, stage=stage)
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ApiGatewayEmulator:
        os.environ.update(self.env)
        self._server = serve(self.app, self.host, self.port, block=False)
        self.port = self._server.server_address[1]
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.app.close()

    def __enter__(self) -> ApiGatewayEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
