"""Recorded API events through their real handlers while a store they need is down: 503 with
Retry-After in OpenAI's error shape, never a 500 (CONTRACT.md §7, §10). DynamoDB down: every
route reads a key record first; Redis down: the tenant API's admission, the billing API's writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.domain.keys import hash_key, parse_key
from gateway.models.records import KeyRecord, TenantRecord, rfc3339, utcnow
from infra.local.services import free_port
from tests.functional.conftest import EXAMPLE_TENANT, SCOPES, example_keys
from tests.functional.test_events import response_headers
from tests.lambdas import configure, context_for, handler_for

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ["invoke/embeddings", "invoke/usage", "billing/get_tenant", "billing/create_tenant", "billing/list_tenants",
           "reports/usage_json", "reports/invoices"]


@pytest.fixture
def example_accounts(container):  # type: ignore[no-untyped-def]
    """The events' example tenant and keys in the table (as tests/functional/test_events.py has them)."""
    now = rfc3339(utcnow())
    container.accounts.create_tenant(TenantRecord(id=EXAMPLE_TENANT, name="Example", plan="starter", created_at=now))
    container.accounts.create_tenant(TenantRecord(id="tn_operators", name="ops", plan="internal", created_at=now))
    for role, plaintext in example_keys().items():
        parsed = parse_key(plaintext)
        assert parsed is not None
        container.accounts.create_key(KeyRecord(
            id=parsed.key_id, tenant_id=EXAMPLE_TENANT if role == "tenant" else "tn_operators",
            scopes=SCOPES[role], key_hash=hash_key(plaintext, container.pepper), created_at=now))
    return container


def through_handler(sample: str) -> tuple[int, dict[str, str], dict]:
    function, name = sample.split("/")
    event = json.loads((ROOT / "events" / function / f"{name}.json").read_text())
    response = handler_for(function)(event, context_for(function))
    return response["statusCode"], response_headers(response), json.loads(response["body"])


def assert_retry_later(status: int, headers: dict[str, str], body: dict) -> None:
    assert status == 503, body
    assert headers["retry-after"] == "1"
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert "Traceback" not in body["error"]["message"] and "botocore" not in body["error"]["message"]


@pytest.mark.parametrize("sample", SAMPLES)
def test_dynamodb_down_is_503_with_retry_after(container, monkeypatch, sample):
    # GIVEN every function's DynamoDB endpoint refusing connections
    configure(monkeypatch, container.settings.model_copy(
        update={"dynamodb_endpoint": f"http://127.0.0.1:{free_port()}"}))
    # WHEN a recorded request comes THEN it is a 503 to retry, not a 500
    assert_retry_later(*through_handler(sample))


@pytest.mark.parametrize("sample", ["invoke/embeddings", "billing/create_tenant"])
def test_redis_down_is_503_with_retry_after(example_accounts, monkeypatch, sample):
    configure(monkeypatch, example_accounts.settings.model_copy(
        update={"redis_url": f"redis://127.0.0.1:{free_port()}/0", "redis_timeout_s": 0.5}))
    assert_retry_later(*through_handler(sample))
