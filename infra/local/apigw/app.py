"""The gateway itself: route a request to a function, invoke one of its copies with the proxy
event, and turn the result into the HTTP response, or answer as API Gateway would."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from infra.local.apigw import proxy
from infra.local.apigw.pool import DEFAULT_MAX_COPIES, FunctionPool, LambdaContext
from infra.local.apigw.proxy import MalformedProxyResponse, Response
from infra.local.apigw.routes import FunctionSpec, Route, read_binary_media_types, read_functions, read_routes
from infra.local.apigw.worker import CopyKilled
from infra.local.template import load_template

LOG = logging.getLogger("maas.apigw")

MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit (10 MiB)
TEMPLATE = Path(__file__).resolve().parents[3] / "template.yaml"


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

    def resolve(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        method = method.upper()
        for route in self.routes:  # most specific first
            if route.method not in (method, "ANY"):
                continue
            params = route.match(path)
            if params is not None:
                return route, params
        return None

    def build_event(self, route: Route, path_params: dict[str, str], **request: Any) -> dict[str, Any]:
        """The proxy event for a request (see proxy.build_event for the keywords)."""
        return proxy.build_event(route, path_params, stage=self.stage, binary_media_types=self.binary_media_types,
                                 **request)

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
        request_id = proxy.new_request_id()
        # Matched segment by segment before decoding, so %2F stays inside a path parameter.
        found = self.resolve(method, urlsplit(raw_path).path or "/")
        if found is None:
            return proxy.route_not_found(request_id)
        if len(body) > self.max_body_bytes:
            return proxy.payload_too_large(request_id)
        route, params = found
        event = self.build_event(route, params, method=method, raw_path=raw_path, headers=headers, body=body,
                                 source_ip=source_ip, protocol=protocol, port=port, request_id=request_id)
        spec = self.functions[route.function_id]
        pool = self.pools[route.function_id]
        try:
            handler = pool.acquire()
        except Exception:
            LOG.exception("%s: init failed", spec.logical_id)
            return proxy.bad_gateway(request_id)
        try:
            result = handler(event, LambdaContext(spec))
        except CopyKilled:
            LOG.warning("%s: the copy serving request %s was killed", spec.logical_id, request_id)
            return proxy.copy_lost(request_id)
        except Exception:
            LOG.exception("%s: unhandled exception (request %s)", spec.logical_id, request_id)
            return proxy.bad_gateway(request_id)
        finally:
            pool.release(handler)
        try:
            return proxy.proxy_response(result, request_id)
        except MalformedProxyResponse as exc:
            LOG.error("%s: malformed Lambda proxy response: %s", spec.logical_id, exc)
            return proxy.bad_gateway(request_id)


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
        binary_media_types=read_binary_media_types(template),
        isolation=isolation,
    )
