"""The webhooks and events routes through the billing function's real handler, with the
recorded events of events/billing/ as templates: scopes before bodies, 400s that name the
field, 404s, and the event listing's filters and cursor."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from gateway.domain.events import Event, EventType, event_id
from gateway.domain.scopes import Scope
from tests.integration.conftest import make_principal
from tests.lambdas import configure, context_for, handler_for

EVENTS = Path(__file__).resolve().parents[2] / "events" / "billing"


@pytest.fixture
def call(container, monkeypatch):  # type: ignore[no-untyped-def]
    """``call(sample, key, body=..., query=..., path_id=...)``: the recorded request, changed as
    asked, through the billing handler; returns (status, body)."""
    configure(monkeypatch, container.settings.model_copy(update={"webhook_allow_local_http": True}))
    handler, context = handler_for("billing"), context_for("billing")

    def invoke(sample: str, key: str, *, body: object = None, query: dict | None = None,
               webhook_id: str | None = None) -> tuple[int, dict]:
        event = copy.deepcopy(json.loads((EVENTS / f"{sample}.json").read_text()))
        event["headers"]["Authorization"] = event["multiValueHeaders"]["Authorization"][0] = f"Bearer {key}"
        if body is not None:
            event["body"] = body if isinstance(body, str) else json.dumps(body)
            event["headers"].pop("Content-Length", None)
            event["multiValueHeaders"].pop("Content-Length", None)
        if query is not None:
            event["queryStringParameters"] = query or None
            event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()} or None
        if webhook_id is not None:
            event["pathParameters"] = {"webhook_id": webhook_id}
            event["path"] = event["resource"].replace("{webhook_id}", webhook_id)
        response = handler(event, context)
        return response["statusCode"], json.loads(response["body"]) if response.get("body") else {}

    return invoke


@pytest.fixture
def keys(container):  # type: ignore[no-untyped-def]
    return {role: make_principal(container, scopes=scopes)[1] for role, scopes in (
        ("admin", (Scope.ADMIN,)), ("finance", (Scope.FINANCE,)), ("tenant", (Scope.INFERENCE, Scope.USAGE_READ)))}


def test_scope_is_checked_before_the_body(call, keys):
    assert call("create_webhook", keys["finance"], body="not json")[0] == 403
    assert call("create_webhook", keys["tenant"], body={"url": 1})[0] == 403
    assert call("list_webhooks", keys["finance"])[0] == 403
    assert call("webhook_deliveries", keys["tenant"])[0] == 403
    assert call("list_events", keys["tenant"])[0] == 403
    assert call("create_webhook", "maas_bogus", body="not json")[0] == 401


@pytest.mark.parametrize("body, param, says", [
    ({"url": "https://93.184.215.14/h", "events": ["credits.low", "credits.gone"]}, "events.1", "credits.low"),
    ({"url": "https://93.184.215.14/h", "events": []}, "events", "at least 1"),
    ({"url": "https://93.184.215.14/h"}, "events", "required"),
    ({"url": "https://93.184.215.14/h", "events": [3]}, "events", "event type names"),
    ({"url": "ftp://93.184.215.14/h", "events": ["credits.low"]}, "url", "https"),
    ({"url": "http://10.0.0.1/h", "events": ["credits.low"]}, "url", "https"),
    ({"url": "", "events": ["credits.low"]}, "url", "at least 1"),
    ({"url": "https://93.184.215.14/h", "events": ["credits.low"], "secret": "mine"}, "secret", "Extra"),
])
def test_invalid_webhooks_get_a_400_naming_the_field(call, keys, body, param, says):
    status, answer = call("create_webhook", keys["admin"], body=body)
    assert status == 400, answer
    assert answer["error"]["param"] == param and says in answer["error"]["message"], answer


def test_create_list_deliveries_delete(call, keys, container):
    status, created = call("create_webhook", keys["admin"],
                           body={"url": "http://127.0.0.1:9/in", "events": ["key.revoked", "key.revoked"]})
    assert status == 201 and created["events"] == ["key.revoked"] and created["secret"].startswith("whsec_")
    assert set(created) == {"id", "object", "url", "events", "created_at", "secret"}
    status, listed = call("list_webhooks", keys["admin"])
    assert status == 200 and listed == {"object": "list", "data": [{k: v for k, v in created.items()
                                                                    if k != "secret"}]}
    assert call("webhook_deliveries", keys["admin"], webhook_id=created["id"]) == (200, {"object": "list",
                                                                                         "data": []})
    assert call("delete_webhook", keys["admin"], webhook_id=created["id"])[0] == 204
    for sample in ("delete_webhook", "webhook_deliveries"):
        for unknown in (created["id"], "wh_nothex", "other"):
            status, answer = call(sample, keys["admin"], webhook_id=unknown)
            assert (status, answer["error"]["code"]) == (404, "webhook_not_found"), (sample, unknown)


def test_event_listing_filters_and_pages(call, keys, container):
    container.event_log.record([
        Event(id=event_id("api", str(n)), type=(EventType.KEY_REVOKED, EventType.CREDITS_LOW)[n % 2],
              created=1_800_000_000 + n, tenant_id="ten_EXAMPLE0000000000", data={"n": n}) for n in range(5)])
    status, page = call("list_events", keys["finance"], query={"limit": "2"})
    assert status == 200 and [e["data"]["n"] for e in page["data"]] == [4, 3] and page["next_cursor"]
    assert page["data"][0] == {"id": event_id("api", "4"), "object": "event", "type": "key.revoked",
                               "created": 1_800_000_004, "tenant_id": "ten_EXAMPLE0000000000", "data": {"n": 4}}
    status, rest = call("list_events", keys["admin"], query={"limit": "2", "cursor": page["next_cursor"]})
    assert [e["data"]["n"] for e in rest["data"]] == [2, 1]
    status, revoked = call("list_events", keys["finance"])  # the recorded sample: key.revoked of one tenant
    assert [e["data"]["n"] for e in revoked["data"]] == [4, 2, 0] and "next_cursor" not in revoked
    for query, param in (({"type": "key.lost"}, "type"), ({"tenant_id": "acme"}, "tenant_id"),
                         ({"cursor": "xyz"}, "cursor"), ({"limit": "0"}, "limit")):
        status, answer = call("list_events", keys["finance"], query=query)
        assert (status, answer["error"]["param"]) == (400, param), query
