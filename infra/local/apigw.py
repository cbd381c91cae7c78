"""A small API Gateway (REST API, Lambda proxy integration) emulator.

What `sam local start-api` does, without Docker: the routes come from the `Api` events of the
`AWS::Serverless::Function` resources in template.yaml, each request becomes the same REST proxy
event API Gateway sends (the samples in events/ have this shape), and the function's real
`handler(event, context)` answers it.

Like Lambda, a function copy serves one request at a time: each function keeps a pool of
copies, grown on demand up to `max_copies`, and each copy is a worker process of its own
(infra/local/lambda_worker.py), as each Lambda execution environment is. Powertools keeps the
current event on a class attribute, process-wide, so two requests must never share a process.

What API Gateway itself answers is answered here the same way, in OpenAI's error shape (the
template's GatewayResponses): an unknown route or method is 404 `unknown_route`, a body over
10 MiB is 413, and a handler that raises or returns a malformed response is 502 "Internal
server error".

The handlers see this process's environment (the local stack sets it), not the template's.

    python -m infra.local.apigw --template template.yaml --port 3000
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import itertools
import json
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from infra.local.template import load_template

__all__ = [
    "ApiGatewayEmulator",
    "Gateway",
    "FunctionSpec",
    "LambdaContext",
    "Response",
    "Route",
    "build_app",
    "load_template",
    "read_functions",
    "read_routes",
    "serve",
]

LOG = logging.getLogger("maas.apigw")

MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit (10 MiB)
DRAIN_LIMIT_BYTES = 4 * MAX_BODY_BYTES  # bigger bodies get the 413 at once and a closed connection
DEFAULT_MAX_COPIES = 32
ACCOUNT_ID = "123456789012"  # placeholder, as sam local uses; never a real account
API_ID = "1234567890"
REGION = "us-east-1"
TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")

# --------------------------------------------------------------------------------------------
# template.yaml


@dataclass(frozen=True)
class FunctionSpec:
    logical_id: str
    code_dir: Path
    handler: str  # "module.attr", e.g. "app.handler"
    timeout_s: int = 3
    memory_mb: int = 128
    environment: Mapping[str, Any] = field(default_factory=dict)  # informational only

    @property
    def module_path(self) -> Path:
        module, _, _ = self.handler.rpartition(".")
        return self.code_dir / (module.replace(".", "/") + ".py")

    @property
    def attr(self) -> str:
        return self.handler.rpartition(".")[2]


@dataclass(frozen=True)
class Route:
    method: str  # upper case, or "ANY"
    resource: str  # the template path, e.g. /billing/tenants/{tenant_id}
    function_id: str
    segments: tuple[str, ...] = ()

    def match(self, path: str) -> dict[str, str] | None:
        """Path parameters when the (decoded) path matches this resource, else None."""
        parts = _split(path)
        params: dict[str, str] = {}
        for i, seg in enumerate(self.segments):
            if seg.startswith("{") and seg.endswith("+}"):
                rest = parts[i:]
                if not rest:
                    return None
                params[seg[1:-2]] = "/".join(unquote(p) for p in rest)
                return params
            if i >= len(parts):
                return None
            if seg.startswith("{") and seg.endswith("}"):
                if not parts[i]:
                    return None
                params[seg[1:-1]] = unquote(parts[i])
            elif unquote(parts[i]) != seg:
                return None
        return params if len(parts) == len(self.segments) else None

    @property
    def specificity(self) -> tuple[int, ...]:
        """Lower sorts first: static segments beat {param}, which beats {greedy+}."""
        return tuple(2 if s.endswith("+}") else 1 if s.startswith("{") else 0 for s in self.segments)


def _split(path: str) -> list[str]:
    path = path.split("?", 1)[0]
    if len(path) > 1 and path.endswith("/"):
        path = path[:-1]
    return path.split("/")[1:] if path != "/" else []


def _resources(template: Mapping[str, Any]) -> Iterable[tuple[str, Mapping[str, Any]]]:
    for logical_id, res in (template.get("Resources") or {}).items():
        if isinstance(res, dict) and res.get("Type") == "AWS::Serverless::Function":
            yield logical_id, res.get("Properties") or {}


def read_functions(template: Mapping[str, Any], project_root: str | Path = ".") -> dict[str, FunctionSpec]:
    """Each serverless function's code location, handler, limits and declared environment."""
    root = Path(project_root)
    glob = ((template.get("Globals") or {}).get("Function")) or {}
    specs: dict[str, FunctionSpec] = {}
    for logical_id, props in _resources(template):
        code_uri = props.get("CodeUri", glob.get("CodeUri"))
        handler = props.get("Handler", glob.get("Handler"))
        if not isinstance(code_uri, str) or not isinstance(handler, str):
            LOG.warning("%s: CodeUri/Handler not literal, not served", logical_id)
            continue
        env: dict[str, Any] = {}
        for source in (glob, props):
            env.update(((source.get("Environment") or {}).get("Variables")) or {})
        specs[logical_id] = FunctionSpec(
            logical_id=logical_id,
            code_dir=(root / code_uri).resolve(),
            handler=handler,
            timeout_s=_int(props.get("Timeout", glob.get("Timeout")), 3),
            memory_mb=_int(props.get("MemorySize", glob.get("MemorySize")), 128),
            environment=env,
        )
    return specs


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def read_routes(template: Mapping[str, Any]) -> list[Route]:
    """Every `Type: Api` event (Path, Method) of every serverless function."""
    routes: list[Route] = []
    for logical_id, props in _resources(template):
        for event in (props.get("Events") or {}).values():
            if not isinstance(event, dict) or event.get("Type") != "Api":
                continue
            p = event.get("Properties") or {}
            path, method = p.get("Path"), p.get("Method")
            if not isinstance(path, str) or not isinstance(method, str):
                continue
            method = method.upper()
            routes.append(Route(method, path, logical_id, tuple(path.strip("/").split("/")) if path != "/" else ()))
    return routes


def _binary_media_types(template: Mapping[str, Any]) -> list[str]:
    types: list[str] = []
    for res in (template.get("Resources") or {}).values():
        if isinstance(res, dict) and res.get("Type") == "AWS::Serverless::Api":
            for t in (res.get("Properties") or {}).get("BinaryMediaTypes") or []:
                if isinstance(t, str):
                    types.append(t.replace("~1", "/"))
    return types


# --------------------------------------------------------------------------------------------
# Lambda: context object and the pool of function copies


class LambdaContext:
    """The attributes of the Python runtime's context object that handlers and Powertools use."""

    def __init__(self, spec: FunctionSpec) -> None:
        self.function_name = spec.logical_id
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{spec.logical_id}"
        self.memory_limit_in_mb = spec.memory_mb
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{spec.logical_id}"
        self.log_stream_name = f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}"
        self.identity = None
        self.client_context = None
        self._deadline = time.monotonic() + spec.timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


Handler = Callable[[dict[str, Any], LambdaContext], Any]
_copy_ids = itertools.count(1)


class FunctionPool:
    """Independent copies of one function, one request per copy at a time: worker processes
    (isolation="process", the default) or module copies in this process ("module")."""

    def __init__(self, spec: FunctionSpec, max_copies: int = DEFAULT_MAX_COPIES, *, isolation: str = "process") -> None:
        if max_copies < 1:
            raise ValueError("max_copies must be at least 1")
        if isolation not in ("process", "module"):
            raise ValueError("isolation is 'process' or 'module'")
        self.spec = spec
        self.max_copies = max_copies
        # "process": each copy is a worker process, like a Lambda execution environment;
        # "module": a module copy in this process, only for handlers keeping no global state.
        self.isolation = isolation
        self._cond = threading.Condition()
        self._idle: list[Handler] = []
        self._all: list[Handler] = []
        self._created = 0

    @property
    def size(self) -> int:
        with self._cond:
            return self._created

    def acquire(self) -> Handler:
        with self._cond:
            while not self._idle and self._created >= self.max_copies:
                self._cond.wait()
            if self._idle:
                return self._idle.pop()  # most recently used first: warm copies stay warm
            self._created += 1
        try:
            return self._load_copy()  # outside the lock: a cold start blocks no one else
        except BaseException:
            with self._cond:
                self._created -= 1
                self._cond.notify()
            raise

    def release(self, handler: Handler) -> None:
        with self._cond:
            if getattr(handler, "alive", True):
                self._idle.append(handler)
            else:  # its process died (as a Lambda environment can): the next request gets a new one
                self._created -= 1
                self._all.remove(handler)
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            copies, self._all, self._idle, self._created = self._all, [], [], 0
        for handler in copies:
            close = getattr(handler, "close", None)
            if close is not None:
                close()

    def _load_copy(self) -> Handler:
        handler = self._load_process() if self.isolation == "process" else self._load_module()
        with self._cond:
            self._all.append(handler)
        return handler

    def _load_process(self) -> Handler:
        from infra.local.lambda_worker import ProcessHandler

        return ProcessHandler(self.spec.module_path, self.spec.attr)

    def _load_module(self) -> Handler:
        path = self.spec.module_path
        name = f"_apigw_{self.spec.logical_id}_{next(_copy_ids)}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module: ModuleType = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module  # dataclasses, pydantic and pickling look modules up here
        try:
            module_spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        handler = getattr(module, self.spec.attr)
        LOG.debug("loaded %s copy %s from %s", self.spec.logical_id, name, path)
        return handler


# --------------------------------------------------------------------------------------------
# The gateway


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def _openai_error(message: str, code: str | None, type_: str = "invalid_request_error") -> bytes:
    return json.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}}).encode()


class Gateway:
    """Routes a request to a function and turns the proxy response into an HTTP response."""

    def __init__(
        self,
        routes: list[Route],
        functions: Mapping[str, FunctionSpec],
        *,
        max_copies: int = DEFAULT_MAX_COPIES,
        stage: str = "local",
        binary_media_types: Iterable[str] = (),
        max_body_bytes: int = MAX_BODY_BYTES,
        isolation: str = "process",
    ) -> None:
        missing = {r.function_id for r in routes} - set(functions)
        if missing:
            raise ValueError(f"routes point at unknown functions: {sorted(missing)}")
        self.routes = sorted(routes, key=lambda r: r.specificity)
        self.functions = dict(functions)
        self.pools = {fid: FunctionPool(spec, max_copies, isolation=isolation) for fid, spec in functions.items()}
        self.stage = stage
        self.binary_media_types = list(binary_media_types)
        self.max_body_bytes = max_body_bytes

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()

    # -- routing

    def resolve(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        method = method.upper()
        for route in self.routes:  # most specific first
            if route.method not in (method, "ANY"):
                continue
            params = route.match(path)
            if params is not None:
                return route, params
        return None

    # -- the proxy event

    def build_event(
        self,
        route: Route,
        path_params: dict[str, str],
        *,
        method: str,
        raw_path: str,
        headers: list[tuple[str, str]],
        body: bytes,
        source_ip: str = "127.0.0.1",
        protocol: str = "HTTP/1.1",
        port: int | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        url = urlsplit(raw_path)
        path = unquote(url.path) or "/"
        single_headers: dict[str, str] = {}
        multi_headers: dict[str, list[str]] = {}
        lower_seen: dict[str, str] = {}
        for name, value in headers:
            key = lower_seen.setdefault(name.lower(), name)  # first spelling wins
            single_headers[key] = value  # API Gateway keeps the last value
            multi_headers.setdefault(key, []).append(value)
        if port is not None:
            for name, value in (("X-Forwarded-Proto", "http"), ("X-Forwarded-Port", str(port))):
                if name.lower() not in lower_seen:
                    single_headers[name] = value
                    multi_headers[name] = [value]

        query: dict[str, str] = {}
        multi_query: dict[str, list[str]] = {}
        for k, v in parse_qsl(url.query, keep_blank_values=True):
            query[k] = v
            multi_query.setdefault(k, []).append(v)

        content_type = next((v for k, v in headers if k.lower() == "content-type"), "")
        is_b64 = self._is_binary(content_type)
        if not body:
            body_field: str | None = None
        elif is_b64:
            body_field = base64.b64encode(body).decode("ascii")
        else:
            body_field = body.decode("utf-8", errors="replace")

        now = datetime.now(UTC)
        user_agent = next((v for k, v in headers if k.lower() == "user-agent"), None)
        host = next((v for k, v in headers if k.lower() == "host"), "localhost")
        return {
            "resource": route.resource,
            "path": path,
            "httpMethod": method.upper(),
            "headers": single_headers or None,
            "multiValueHeaders": multi_headers or None,
            "queryStringParameters": query or None,
            "multiValueQueryStringParameters": multi_query or None,
            "pathParameters": path_params or None,
            "stageVariables": None,
            "requestContext": {
                "resourceId": "123456",
                "resourcePath": route.resource,
                "httpMethod": method.upper(),
                "extendedRequestId": None,
                "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
                "path": f"/{self.stage}{path}",
                "accountId": ACCOUNT_ID,
                "protocol": protocol,
                "stage": self.stage,
                "domainName": host,
                "requestTimeEpoch": int(now.timestamp() * 1000),
                "requestId": request_id or str(uuid.uuid4()),
                "identity": {
                    "cognitoIdentityPoolId": None,
                    "accountId": None,
                    "cognitoIdentityId": None,
                    "caller": None,
                    "apiKey": None,
                    "sourceIp": source_ip,
                    "cognitoAuthenticationType": None,
                    "cognitoAuthenticationProvider": None,
                    "userArn": None,
                    "userAgent": user_agent,
                    "user": None,
                },
                "apiId": API_ID,
            },
            "body": body_field,
            "isBase64Encoded": is_b64,
        }

    def _is_binary(self, content_type: str) -> bool:
        mime = content_type.split(";", 1)[0].strip().lower()
        for t in self.binary_media_types:
            t = t.lower()
            if t == "*/*" or t == mime or (t.endswith("/*") and mime.startswith(t[:-1])):
                return True
        return False

    # -- one request

    def handle(
        self,
        method: str,
        raw_path: str,
        headers: list[tuple[str, str]],
        body: bytes,
        *,
        source_ip: str = "127.0.0.1",
        protocol: str = "HTTP/1.1",
        port: int | None = None,
    ) -> Response:
        request_id = str(uuid.uuid4())
        base = [("x-amzn-RequestId", request_id)]
        # Matched segment by segment before decoding, so %2F stays inside a path parameter.
        found = self.resolve(method, urlsplit(raw_path).path or "/")
        if found is None:
            return self._error(
                404,
                base,
                request_id,
                "No route matches this method and path",
                "unknown_route",
            )
        if len(body) > self.max_body_bytes:
            return self.too_large(request_id)
        route, params = found
        event = self.build_event(
            route,
            params,
            method=method,
            raw_path=raw_path,
            headers=headers,
            body=body,
            source_ip=source_ip,
            protocol=protocol,
            port=port,
            request_id=request_id,
        )
        spec = self.functions[route.function_id]
        pool = self.pools[route.function_id]
        try:
            handler = pool.acquire()
        except Exception:
            LOG.exception("%s: init failed", spec.logical_id)
            return self._bad_gateway(base)
        try:
            result = handler(event, LambdaContext(spec))
        except Exception:
            LOG.exception("%s: unhandled exception (request %s)", spec.logical_id, request_id)
            return self._bad_gateway(base)
        finally:
            pool.release(handler)
        try:
            return self._proxy_response(result, base)
        except (TypeError, ValueError) as exc:
            LOG.error("%s: malformed Lambda proxy response: %s", spec.logical_id, exc)
            return self._bad_gateway(base)

    def too_large(self, request_id: str | None = None) -> Response:
        request_id = request_id or str(uuid.uuid4())
        return self._error(
            413,
            [("x-amzn-RequestId", request_id)],
            request_id,
            "Request body too large",
            "request_too_large",
        )

    @staticmethod
    def _error(status: int, base: list[tuple[str, str]], request_id: str, message: str, code: str) -> Response:
        body = _openai_error(f"{message} (request {request_id})", code)
        headers = [*base, ("x-request-id", request_id), ("Content-Type", "application/json")]
        return Response(status, headers, body)

    @staticmethod
    def _bad_gateway(base: list[tuple[str, str]]) -> Response:
        # What the template's DEFAULT_5XX gateway response makes of API Gateway's
        # {"message": "Internal server error"}: the same text in OpenAI's shape.
        request_id = base[0][1]
        body = _openai_error("Internal server error", None, type_="server_error")
        headers = [*base, ("x-request-id", request_id), ("Content-Type", "application/json")]
        return Response(502, headers, body)

    @staticmethod
    def _proxy_response(result: Any, base: list[tuple[str, str]]) -> Response:
        if not isinstance(result, dict):
            raise TypeError(f"expected a dict, got {type(result).__name__}")
        allowed = {"statusCode", "body", "headers", "multiValueHeaders", "isBase64Encoded", "cookies"}
        extra = set(result) - allowed
        if extra:
            raise ValueError(f"unexpected keys {sorted(extra)}")
        status = int(result.get("statusCode") or 200)
        if not 100 <= status <= 599:
            raise ValueError(f"bad statusCode {status}")
        merged: dict[str, list[str]] = {}
        spelled: dict[str, str] = {}
        for name, values in (result.get("multiValueHeaders") or {}).items():
            spelled.setdefault(name.lower(), name)
            merged.setdefault(name.lower(), []).extend(str(v) for v in values)
        for name, value in (result.get("headers") or {}).items():
            if name.lower() not in merged:  # multiValueHeaders win for the same name
                spelled.setdefault(name.lower(), name)
                merged[name.lower()] = [str(value)]
        raw_body = result.get("body")
        if raw_body is None:
            body = b""
        elif not isinstance(raw_body, str):
            raise TypeError("body must be a string")
        elif result.get("isBase64Encoded") in (True, "true", "True"):
            body = base64.b64decode(raw_body)
        else:
            body = raw_body.encode("utf-8")
        headers = [(spelled[k], v) for k, vs in merged.items() for v in vs]
        if "content-type" not in merged:
            headers.append(("Content-Type", "application/json"))  # API Gateway's default
        return Response(status, [*base, *headers], body)


def build_app(
    template_path: str | Path = TEMPLATE,
    project_root: str | Path | None = None,
    max_copies: int = DEFAULT_MAX_COPIES,
    *,
    stage: str = "local",
    isolation: str = "process",
) -> Gateway:
    """The gateway for a template; code paths are relative to project_root (default: the
    template's folder), which also goes on sys.path so handlers import the project's packages."""
    template_path = Path(template_path).resolve()
    root = Path(project_root).resolve() if project_root is not None else template_path.parent
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    template = load_template(template_path)
    return Gateway(
        read_routes(template),
        read_functions(template, root),
        max_copies=max_copies,
        stage=stage,
        binary_media_types=_binary_media_types(template),
        isolation=isolation,
    )


# --------------------------------------------------------------------------------------------
# HTTP


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "maas-apigw"
    sys_version = ""
    server: _Server

    def handle_expect_100(self) -> bool:
        if self._declared_length() > self.server.app.max_body_bytes:
            self._send(self.server.app.too_large(), close=True)
            return False
        return super().handle_expect_100()

    def _declared_length(self) -> int:
        try:
            return int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return 0

    def _read_body(self) -> bytes | None:
        """The request body, or None when it is over the limit (the connection then closes)."""
        limit = self.server.app.max_body_bytes
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks, total = [], 0
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                total += size
                if total > limit:
                    return None
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = self._declared_length()
        if length > limit:
            if length <= DRAIN_LIMIT_BYTES:  # read and drop it, so the client sees the 413
                while length > 0:
                    chunk = self.rfile.read(min(length, 1 << 16))
                    if not chunk:
                        break
                    length -= len(chunk)
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self) -> None:
        app = self.server.app
        body = self._read_body()
        if body is None:
            self._send(app.too_large(), close=True)
            return
        response = app.handle(
            self.command,
            self.path,
            list(self.headers.items()),
            body,
            source_ip=self.client_address[0],
            protocol=self.request_version,
            port=self.server.server_address[1],
        )
        self._send(response)

    def _send(self, response: Response, *, close: bool = False) -> None:
        self.send_response(response.status)
        for name, value in response.headers:
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        LOG.info("%s %s", self.address_string(), format % args)


for _m in HTTP_METHODS:
    setattr(_RequestHandler, f"do_{_m}", _RequestHandler._dispatch)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], app: Gateway) -> None:
        self.app = app
        super().__init__(address, _RequestHandler)


def serve(
    app: Gateway,
    host: str = "127.0.0.1",
    port: int = 3000,
    *,
    block: bool = True,
) -> ThreadingHTTPServer:
    """Serve app over HTTP. port=0 picks a free port (see server.server_address). With
    block=False the server runs in a daemon thread; stop it with server.shutdown()."""
    server = _Server((host, port), app)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.local.apigw",
        description="Serve template.yaml's API routes with the real handlers (sam local start-api without Docker).",
    )
    parser.add_argument("--template", default=str(TEMPLATE))
    parser.add_argument("--project-root", default=None, help="default: the template's folder")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--max-copies", type=int, default=DEFAULT_MAX_COPIES)
    parser.add_argument("--stage", default="local")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    app = build_app(args.template, args.project_root, args.max_copies, stage=args.stage)
    for r in app.routes:
        LOG.info("route %-6s %-40s -> %s", r.method, r.resource, r.function_id)
    LOG.info("API Gateway emulator on http://%s:%d", args.host, args.port)
    try:
        serve(app, args.host, args.port)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
