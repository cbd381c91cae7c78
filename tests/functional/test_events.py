"""Every recorded event in events/ through its real handler, as `sam local invoke -e` would,
against a table seeded with the events' example tenant and keys (real Redis, moto's server,
the real inference server)."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from infra.local.template import load_template
from tests.functional.conftest import EVENTS, EXAMPLE_TENANT, ROOT
from tests.lambdas import context_for, handler_for

# pytest-xdist (make test): the artifact tests share one worker: the runtime venv under
# .maas/artifact-runtime is built once, never by two workers at once.
pytestmark = pytest.mark.xdist_group("artifact")

# Not API Gateway events: the flusher's dispatcher and workers, the reconcile schedule, the
# delivery function's stream, bus and schedules, the projector's stream and schedule, the
# batch worker's schedule.
NOT_API = {"flusher", "flush_dispatcher", "reconcile", "delivery", "projector", "batch_worker"}

# What each recorded request gets from a freshly seeded table.
EXPECTED_STATUS = {
    "billing/audit": 200, "billing/create_key": 201, "billing/create_tenant": 201, "billing/get_tenant": 200,
    "billing/list_keys": 200, "billing/list_plans": 200, "billing/list_tenants": 200,
    "billing/patch_tenant": 200, "billing/revoke_key": 204, "billing/rotate_key": 201,
    "billing/create_webhook": 201, "billing/list_webhooks": 200, "billing/webhook_deliveries": 200,
    "billing/delete_webhook": 204, "billing/list_events": 200,
    "invoke/embeddings": 200, "invoke/embeddings_base64": 200, "invoke/health": 200, "invoke/models": 200,
    "invoke/usage": 200, "invoke/me": 200, "invoke/own_keys": 200, "invoke/list_batches": 200, "reports/invoices": 200,
    "reports/ledger_events": 200, "reports/usage_csv": 200, "reports/usage_json": 200,
    "console/index": 200, "console/asset": 200, "console/redirect": 301,
    "billing/grant_credits": 201, "billing/list_credits": 200, "billing/tenant_balance": 200,
    "billing/update_key": 200, "invoke/balance": 200, "reports/reconcile": 200,
}


def test_every_event_has_an_expectation():
    names = {f"{p.parent.name}/{p.stem}" for p in EVENTS if p.parent.name not in NOT_API}
    assert names == set(EXPECTED_STATUS)


@pytest.mark.parametrize("path", [p for p in EVENTS if p.parent.name not in NOT_API],
                         ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recorded_event_through_its_handler(seeded, path):
    check_recorded_event(path, handler_for(path.parent.name))


def check_recorded_event(path: Path, handler: Callable[[dict, object], dict]) -> None:
    """The recorded event through `handler` (the source tree's, or the artifact's) answers as
    expected."""
    event = json.loads(path.read_text())
    response = handler(event, context_for(path.parent.name))
    name = f"{path.parent.name}/{path.stem}"
    assert response["statusCode"] == EXPECTED_STATUS[name], response.get("body", "")[:300]
    headers = response_headers(response)
    assert headers["x-request-id"] == event["requestContext"]["requestId"]
    content_type = headers.get("content-type", "")
    if "csv" in content_type:
        assert response["body"].startswith("tenant_id,date,model,requests,prompt_tokens,cost,currency\r\n")
    elif response["statusCode"] not in (204, 301) and not content_type.startswith(("text/", "image/")):
        CHECKS.get(name, lambda body, headers: None)(json.loads(response["body"]), headers)


def response_headers(response: dict) -> dict[str, str]:
    """The headers as API Gateway sends them: multiValueHeaders merged over headers, lower-cased."""
    merged = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
    merged |= {k.lower(): v[-1] for k, v in (response.get("multiValueHeaders") or {}).items()}
    return merged


def _embeddings(body: dict, headers: dict[str, str]) -> None:
    assert body["object"] == "list" and body["model"] == "all-MiniLM-L6-v2"
    assert [item["index"] for item in body["data"]] == list(range(len(body["data"])))
    for item in body["data"]:
        vector = item["embedding"]
        if isinstance(vector, str):  # base64 of little-endian float32
            vector = list(struct.unpack("<384f", base64.b64decode(vector)))
        assert len(vector) == 384 and abs(sum(v * v for v in vector) - 1) < 1e-4  # L2-normalised
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 0
    assert headers["ratelimit-policy"] == '"requests";q=600;w=60, "tokens";q=150000;w=60;qu="x-tokens"'
    assert headers["ratelimit"] == (f'"requests";r=599;t=1, '
                                    f'"tokens";r={150000 - body["usage"]["prompt_tokens"]};t=1')


def _list_of(kind: str) -> Callable[[dict, dict[str, str]], None]:
    def check(body: dict, headers: dict[str, str]) -> None:
        assert body["object"] == "list" and body["data"], body
        assert all(item["object"] == kind for item in body["data"])
    return check


def _key(body: dict, headers: dict[str, str]) -> None:
    assert body["key"].startswith("maas_") and body["scopes"] == ["inference", "usage:read"]
    assert "key_hash" not in body and body["status"] == "active"


def _balance(body: dict, headers: dict[str, str]) -> None:
    assert (body["object"], body["currency"], body["mode"]) == ("balance", "USD", "postpaid"), body
    assert body["month_to_date_cost"] == "0" and body["budget"] is None and body["grants"] == []


CHECKS: dict[str, Callable[[dict, dict[str, str]], None]] = {
    "billing/grant_credits": lambda body, _: (body["object"], body["amount"], body["remaining"]) == (
        "credit_grant", "25", "25") or pytest.fail(str(body)),
    "billing/update_key": lambda body, _: (body["limits"], body["budget"]["monthly_amount"]) == (
        {"requests_per_minute": 60}, "20") or pytest.fail(str(body)),
    "billing/tenant_balance": _balance,
    "invoke/balance": _balance,
    "reports/reconcile": lambda body, _: (body["object"], body["month"], body["status"]) == (
        "reconciliation", "2026-11", "not_run") or pytest.fail(str(body)),
    "invoke/embeddings": _embeddings,
    "invoke/embeddings_base64": _embeddings,
    "invoke/models": lambda body, _: body["data"][0]["id"] == "all-MiniLM-L6-v2" or pytest.fail(str(body)),
    "invoke/health": lambda body, _: body == {"status": "ok", "checks": {"redis": "ok", "dynamodb": "ok",
                                                                          "inference": "ok"}} or pytest.fail(str(body)),
    "billing/list_plans": _list_of("plan"),
    "billing/list_tenants": _list_of("tenant"),
    "billing/list_keys": _list_of("api_key"),
    "billing/create_key": _key,
    "billing/rotate_key": _key,
    "billing/create_tenant": lambda body, _: (body["status"], body["plan"]) == ("active", "starter")
    or pytest.fail(str(body)),
    "billing/create_webhook": lambda body, _: (body["object"], body["secret"][:6], body["events"]) == (
        "webhook", "whsec_", ["budget.threshold_crossed", "credits.low"]) or pytest.fail(str(body)),
    "billing/list_webhooks": _list_of("webhook"),
    "billing/webhook_deliveries": _list_of("webhook_delivery"),
    "billing/list_events": _list_of("event"),
    "billing/patch_tenant": lambda body, _: (body["status"], body["limits"]["requests_per_minute"]) == (
        "suspended", 120) or pytest.fail(str(body)),
}


def test_scheduled_flusher_event_drains_the_streams(seeded):
    event = json.loads((ROOT / "events" / "invoke" / "embeddings.json").read_text())
    assert handler_for("invoke")(event, context_for("invoke"))["statusCode"] == 200
    scheduled = json.loads((ROOT / "events" / "flusher" / "scheduled.json").read_text())
    assert scheduled["detail-type"] == "Scheduled Event"
    result = handler_for("flusher")(scheduled, context_for("flusher"))
    assert result["written"] == 1
    rows = list(seeded.usage.ledger_all(EXAMPLE_TENANT, "2000-01-01", "2100-01-01"))
    assert len(rows) == 1


def test_each_function_in_the_template_has_recorded_events():
    template = load_template()
    functions = {Path(r["Properties"]["CodeUri"]).name for r in template["Resources"].values()
                 if r["Type"] == "AWS::Serverless::Function"}
    assert functions == {p.parent.name for p in EVENTS}
