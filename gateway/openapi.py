"""The OpenAPI 3 document of the whole public API (gateway/openapi.yaml).

It is checked equal to the Api events of template.yaml and to the routes the handlers
register (tests/unit/test_openapi.py), and it drives the contract fuzzing of the running
stack (tests/e2e/test_schemathesis.py). Never imported by a handler."""

from __future__ import annotations

import copy
from functools import lru_cache
from importlib import resources
from typing import Any

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@lru_cache(maxsize=1)
def _parsed() -> dict[str, Any]:
    import yaml

    return yaml.safe_load(text())


def document() -> dict[str, Any]:
    """A fresh copy each call: tools such as schemathesis resolve references in place."""
    return copy.deepcopy(_parsed())


def text() -> str:
    return resources.files("gateway").joinpath("openapi.yaml").read_text()


def operations(doc: dict[str, Any] | None = None) -> set[tuple[str, str]]:
    """(METHOD, /path/{param}) of every operation."""
    doc = doc or document()
    return {(method.upper(), path) for path, item in doc["paths"].items() for method in item
            if method in HTTP_METHODS}
