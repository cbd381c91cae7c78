"""Every recorded event in events/ through its real handler, as `sam local invoke -e` would,
against a table seeded with the events' example tenant and keys (real Redis, moto's server,
the real inference server)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from gateway.domain.keys import hash_key, parse_key
from gateway.models.records import KeyRecord, TenantRecord, rfc3339, utcnow
from infra.local.apigw import LambdaContext, read_functions
from infra.local.template import load_template

ROOT = Path(__file__).resolve().parents[2]
EVENTS = sorted((ROOT / "events").glob("*/*.json"))
EXAMPLE_TENANT = "ten_EXAMPLE0000000000"
SCOPES = {"admin": ["admin"], "finance": ["finance"], "tenant": ["inference", "usage:read"]}
SCHEDULED = {"flusher", "reconcile"}  # EventBridge events, not API requests

# What each recorded request gets from a freshly seeded table.
EXPECTED_STATUS = {
    "billing/audit": 200, "billing/create_key": 201, "billing/create_tenant": 201, "billing/get_tenant": 200,
    "billing/list_keys": 200, "billing/list_plans": 200, "billing/list_tenants": 200,
    "billing/patch_tenant": 200, "billing/revoke_key": 204, "billing/rotate_key": 201,
    "invoke/embeddings": 200, "invoke/embeddings_base64": 200, "invoke/health": 200, "invoke/models": 200,
    "invoke/usage": 200, "reports/invoices": 200, "reports/ledger_events": 200, "reports/usage_csv": 200,
    "reports/usage_json": 200,
}


def handler_for(function_dir: str):  # type: ignore[no-untyped-def]
    path = ROOT / "functions" / function_dir / "app.py"
    spec = importlib.util.spec_from_file_location(f"functional_{function_dir}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.handler


def context_for(function_dir: str) -> LambdaContext:
    """The context Lambda would pass: the function's name, memory and timeout from the template."""
    specs = read_functions(load_template(), ROOT)
    return LambdaContext(next(spec for spec in specs.values() if spec.code_dir.name == function_dir))


def example_keys() -> dict[str, str]:
    """The example keys the recorded events carry, by their role."""
    found = {}
    for path in EVENTS:
        auth = (json.loads(path.read_text()).get("headers") or {}).get("Authorization", "")
        key = auth.removeprefix("Bearer ")
        role = next((r for r in SCOPES if f"EXAMPLE{r}" in key), None)
        if role and key:
            found[role] = key
    return found


@pytest.fixture
def seeded(container, inference_url, monkeypatch):  # type: ignore[no-untyped-def]
    import gateway.wiring
    from gateway.adapters.inference import HttpInferenceClient

    container.__dict__["inference"] = HttpInferenceClient(inference_url, timeout_s=20)
    monkeypatch.setattr(gateway.wiring, "_container", container)
    now = rfc3339(utcnow())
    container.store.create_tenant(TenantRecord(id=EXAMPLE_TENANT, name="Example", plan="starter", created_at=now))
    container.store.create_tenant(TenantRecord(id="tn_operators", name="ops", plan="internal", created_at=now))
    for role, plaintext in example_keys().items():
        parsed = parse_key(plaintext)
        assert parsed is not None, f"the example {role} key in events/ must be well formed"
        container.store.create_key(KeyRecord(
            id=parsed.key_id, tenant_id=EXAMPLE_TENANT if role == "tenant" else "tn_operators",
            scopes=SCOPES[role], key_hash=hash_key(plaintext, container.pepper), created_at=now))
    return container


def test_every_event_has_an_expectation():
    names = {f"{p.parent.name}/{p.stem}" for p in EVENTS if p.parent.name not in SCHEDULED}
    assert names == set(EXPECTED_STATUS)


@pytest.mark.parametrize("path", [p for p in EVENTS if p.parent.name not in SCHEDULED],
                         ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recorded_event_through_its_handler(seeded, path):
    event = json.loads(path.read_text())
    response = handler_for(path.parent.name)(event, context_for(path.parent.name))
    name = f"{path.parent.name}/{path.stem}"
    assert response["statusCode"] == EXPECTED_STATUS[name], response.get("body", "")[:300]
    assert response["headers"]["x-request-id"] == event["requestContext"]["requestId"]
    content_type = (response.get("multiValueHeaders") or {}).get("Content-Type", [""])[0] or \
        response["headers"].get("Content-Type", "")
    if response["statusCode"] != 204 and "csv" not in content_type:
        json.loads(response["body"])


def test_scheduled_flusher_event_drains_the_streams(seeded):
    event = json.loads((ROOT / "events" / "invoke" / "embeddings.json").read_text())
    assert handler_for("invoke")(event, context_for("invoke"))["statusCode"] == 200
    scheduled = json.loads((ROOT / "events" / "flusher" / "scheduled.json").read_text())
    assert scheduled["detail-type"] == "Scheduled Event"
    result = handler_for("flusher")(scheduled, context_for("flusher"))
    assert result["written"] == 1
    rows = list(seeded.store.ledger_all(EXAMPLE_TENANT, "2000-01-01", "2100-01-01"))
    assert len(rows) == 1


def test_each_function_in_the_template_has_recorded_events():
    template = load_template()
    functions = {Path(r["Properties"]["CodeUri"]).name for r in template["Resources"].values()
                 if r["Type"] == "AWS::Serverless::Function"}
    assert functions == {p.parent.name for p in EVENTS}
