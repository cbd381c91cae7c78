"""The routes each function's Powertools resolver registers, for the tests that tie the
template, the OpenAPI document and the handlers together."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def handler_routes(folder: str) -> set[tuple[str, str]]:
    """(METHOD, /path/{param}) registered on functions/<folder>/app.py's resolver."""
    name = f"_route_check_{folder}"
    spec = importlib.util.spec_from_file_location(name, ROOT / "functions" / folder / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)
    app = module.app
    registered = list(getattr(app, "_static_routes", [])) + list(getattr(app, "_dynamic_routes", []))
    return {(r.method.upper(), r.openapi_path) for r in registered}
