"""DynamoDB's JSON 1.0 protocol over HTTP/1.1 (keep-alive), one thread per connection:
``POST /`` with ``X-Amz-Target: DynamoDB_20120810.<Operation>``. Any SigV4 credentials
are accepted (signatures are not verified; the region in them only names the ARNs).
``GET /`` answers as DynamoDB's endpoint does, which makes it a readiness probe."""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson

from infra.local.dynamodb.errors import (
    DynamoError,
    InternalServerError,
    SerializationException,
    UnknownOperationException,
)
from infra.local.dynamodb.operations import OPERATIONS
from infra.local.dynamodb.storage import Database

log = logging.getLogger("infra.local.dynamodb")

_TARGET_PREFIX = "DynamoDB_20120810."
_REGION = re.compile(r"Credential=[^/]*/[^/]*/([^/]+)/")
DEFAULT_REGION = "us-east-1"


def handle(database: Database, target: str, body: bytes, region: str) -> tuple[int, dict[str, Any]]:
    """One API call: (HTTP status, JSON body)."""
    started = time.perf_counter()
    name = target.removeprefix(_TARGET_PREFIX) if target.startswith(_TARGET_PREFIX) else ""
    try:
        operation = OPERATIONS.get(name)
        if operation is None:
            raise UnknownOperationException(f"Unknown operation: {target}")
        try:
            request = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError:
            raise SerializationException("Start of structure or map found where not expected") from None
        if not isinstance(request, dict):
            raise SerializationException("Start of structure or map found where not expected")
        status, response = 200, operation(database, request, region)
    except DynamoError as error:
        status, response = error.status, error.body()
    except Exception:  # a bug here must not look like a client error, nor kill the connection
        log.exception("%s failed", name)
        internal = InternalServerError("The server encountered an internal error trying to fulfill the request")
        status, response = internal.status, internal.body()
    log.debug("%s %d %.1f ms", name or target, status, (time.perf_counter() - started) * 1000)
    return status, response


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: DynamoServer

    def setup(self) -> None:
        # Headers and payload leave in two writes: with Nagle's algorithm the payload would wait
        # for the client's delayed ACK, 40 ms on every keep-alive call.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().setup()

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        match = _REGION.search(self.headers.get("Authorization", ""))
        status, response = handle(self.server.database, self.headers.get("X-Amz-Target", ""), body,
                                  match.group(1) if match else DEFAULT_REGION)
        self._send(status, orjson.dumps(response), "application/x-amz-json-1.0")

    def do_GET(self) -> None:  # noqa: N802
        self._send(200, f"healthy: dynamodb.{DEFAULT_REGION}.amazonaws.com ".encode(), "text/plain")

    def _send(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("x-amzn-RequestId", uuid.uuid4().hex.upper())
        self.send_header("x-amz-crc32", str(zlib.crc32(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's signature
        log.debug("%s " + format, self.address_string(), *args)


class DynamoServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], database: Database) -> None:
        super().__init__(address, _Handler)
        self.database = database


def serve(host: str, port: int, db_path: Path) -> DynamoServer:
    """A started server (its own thread); ``stop(server)`` ends it and closes the database."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    server = DynamoServer((host, port), Database(db_path))
    threading.Thread(target=server.serve_forever, name="dynamodb-http", daemon=True).start()
    return server


def stop(server: DynamoServer) -> None:
    server.shutdown()
    server.server_close()
    server.database.close()
