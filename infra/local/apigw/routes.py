"""What the emulator serves, read from template.yaml: each serverless function's code and
limits, the `Type: Api` events that route to it, and the API's binary media types."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

LOG = logging.getLogger("maas.apigw")


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
        """Path parameters when the (still encoded) path matches this resource, else None."""
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


def read_binary_media_types(template: Mapping[str, Any]) -> list[str]:
    """The BinaryMediaTypes of the template's AWS::Serverless::Api (~1 is the escaped /)."""
    types: list[str] = []
    for res in (template.get("Resources") or {}).values():
        if isinstance(res, dict) and res.get("Type") == "AWS::Serverless::Api":
            for t in (res.get("Properties") or {}).get("BinaryMediaTypes") or []:
                if isinstance(t, str):
                    types.append(t.replace("~1", "/"))
    return types
