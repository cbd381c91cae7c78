"""Entry modules as Lambda runs them: loaded fresh from functions/<name>/app.py, each building
its container from the environment (which the test sets), called with a real context."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.config import Settings
from infra.local.apigw import LambdaContext, read_functions
from infra.local.template import load_template

ROOT = Path(__file__).resolve().parents[1]


def handler_for(function_dir: str) -> Callable[[dict[str, Any], Any], Any]:
    path = ROOT / "functions" / function_dir / "app.py"
    spec = importlib.util.spec_from_file_location(f"lambda_{function_dir}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return record_calls(module, function_dir).handler  # type: ignore[no-any-return]


def record_calls(module: Any, function_dir: str) -> Any:
    """Gives the entry module's container a boto3 session that records every AWS call as this
    function's (tests/iam; checked against its role at the end of the session)."""
    from tests.iam.recorder import recording_session
    from tests.iam.roles import roles

    container = getattr(module, "container", None)
    if container is None:
        return module
    name, role = next((n, r) for n, r in roles().items() if r.code_dir == function_dir)
    actual = container.settings.to_env()
    aliases = {actual[var]: value for var, value in role.environment.items() if actual.get(var)}
    container.__dict__["boto_session"] = recording_session(name, container.settings.aws_region, aliases)
    return module


def context_for(function_dir: str) -> LambdaContext:
    """The context Lambda would pass: the function's name, memory and timeout from the template."""
    specs = read_functions(load_template(), ROOT)
    return LambdaContext(next(spec for spec in specs.values() if spec.code_dir.name == function_dir))


def configure(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    """The environment a function gets in AWS (template.yaml), pointing at the test's services:
    exactly these settings (a setting left unset is removed, whatever another test left behind)."""
    from gateway.config import PREFIX

    wanted = settings.to_env()
    for field in Settings.model_fields:
        name = PREFIX + field.upper()
        if name in wanted:
            monkeypatch.setenv(name, wanted[name])
        else:
            monkeypatch.delenv(name, raising=False)


def emf_metrics(stdout: str) -> dict[str, float]:
    """The metrics the Embedded Metric Format lines on stdout publish (what CloudWatch reads)."""
    found: dict[str, float] = {}
    for line in stdout.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            blob = json.loads(line)
            for directive in blob["_aws"]["CloudWatchMetrics"]:
                for metric in directive["Metrics"]:
                    value = blob[metric["Name"]]
                    found[metric["Name"]] = value[-1] if isinstance(value, list) else value
    return found
