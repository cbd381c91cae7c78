"""A real webhook receiver for the tests: an HTTP server on 127.0.0.1 (its own thread) that
verifies every request's ``Maas-Signature`` with the webhook's secret, records what came,
and answers as told: a sequence of statuses (the last one repeats), or hanging."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from gateway.domain.webhooks import SIGNATURE_HEADER, verify_signature


@dataclass
class Received:
    at: float  # time.monotonic()
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool | None  # None while the receiver has no secret
    seen: Any = None  # what ``Receiver.on_request()`` returned as this request arrived

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)  # type: ignore[no-any-return]


@dataclass
class Receiver:
    statuses: list[int] = field(default_factory=lambda: [200])
    hang_s: float = 0.0  # wait this long before answering (or until close())
    secret: str | None = None
    received: list[Received] = field(default_factory=list)
    answered: int = 0  # answers written: a hanging receiver's stays 0 until it stops hanging
    # called in the handler as each request arrives, before it is answered: what the rest of
    # the world looked like at that moment (an order of events, not a time)
    on_request: Callable[[], Any] | None = None

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                secret = receiver.secret
                verified = (verify_signature(secret, body, self.headers.get(SIGNATURE_HEADER, ""), now=time.time())
                            if secret else None)
                seen = receiver.on_request() if receiver.on_request else None
                with receiver._lock:
                    receiver.received.append(Received(time.monotonic(), self.path, dict(self.headers), body,
                                                      verified, seen))
                    status = receiver.statuses[min(len(receiver.received) - 1, len(receiver.statuses) - 1)]
                if receiver.hang_s:
                    receiver._released.wait(receiver.hang_s)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                finally:
                    with receiver._lock:
                        receiver.answered += 1

            def log_message(self, *args: Any) -> None:
                pass

        self._lock = threading.Lock()
        self._released = threading.Event()
        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a sender that gave up on a hanging answer closed its end: expected here

        self._server = Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks"

    def event_ids(self) -> list[str]:
        with self._lock:
            return [r.event["id"] for r in self.received]

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[Received]:
        """The first ``count`` requests, waiting for them (AssertionError past the timeout)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.received) >= count:
                    return list(self.received[:count])
            time.sleep(0.02)
        raise AssertionError(f"{len(self.received)} of {count} requests within {timeout_s}s")

    def wait_for_matching(self, match: Callable[[dict[str, Any]], bool], timeout_s: float = 10.0) -> Received:
        """The first request whose event ``match``es (others may arrive too: a shared stack's
        events go to every webhook subscribed to their type)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                for request in self.received:
                    if match(request.event):
                        return request
            time.sleep(0.02)
        raise AssertionError(f"no matching event within {timeout_s}s ({len(self.received)} others)")

    def close(self) -> None:
        self._released.set()  # a hanging handler answers now, and shutdown does not wait it out
        self._server.shutdown()
        self._server.server_close()
