"""POST /v1/embeddings two ways through the invoke function: the thin route its handler takes
and the Powertools resolver every other route takes. The same event, from the same state
(Redis emptied and seeded again from the table before each path), gives the same answer:
status, headers and body, byte for byte, good and bad (real Redis, the local DynamoDB, the
real inference server). And the thin path keeps what the decorators gave: the correlation id
on the logs, the cold-start metric, the request's metrics in one EMF line."""

from __future__ import annotations

import base64
import copy
import importlib.util
import json
import time
from decimal import Decimal
from typing import Any

import pytest

from gateway.adapters.redis_store import RedisLimiter
from gateway.domain.keys import hash_key, new_key
from gateway.domain.plans import BillingMode, LimitOverrides
from gateway.models.records import KeyRecord, TenantRecord, rfc3339, utcnow
from infra.local.services import free_port
from tests.functional.conftest import EXAMPLE_TENANT, ROOT, example_keys
from tests.lambdas import configure, context_for, emf_metrics, record_calls

EVENT = json.loads((ROOT / "events" / "invoke" / "embeddings.json").read_text())
GOOD_BODY = json.dumps({"model": "all-MiniLM-L6-v2", "input": "hello world"})


def load_invoke() -> Any:
    """functions/invoke/app.py as Lambda loads it (its container from the environment)."""
    spec = importlib.util.spec_from_file_location("lambda_invoke_route", ROOT / "functions" / "invoke" / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return record_calls(module, "invoke")


def event(body: str | None = GOOD_BODY, *, key: str | None = None, headers: dict[str, str] | None = None,
          base64_encoded: bool = False) -> dict[str, Any]:
    """The recorded event with another body, key or headers (both header maps, as API Gateway
    sends them)."""
    sent = copy.deepcopy(EVENT)
    sent["body"], sent["isBase64Encoded"] = body, base64_encoded
    given = {"Authorization": f"Bearer {key or example_keys()['tenant']}", **(headers or {})}
    for name, value in given.items():
        sent["headers"].pop(name, None), sent["multiValueHeaders"].pop(name, None)
        if value is not None:
            sent["headers"][name], sent["multiValueHeaders"][name] = value, [value]
    return sent


def new_tenant_key(container: Any, *, billing: BillingMode | None = None, limits: LimitOverrides | None = None,
                   scopes: tuple[str, ...] = ("inference",), plan: str | None = None) -> str:
    """A tenant of its own (prepaid with no credit, say, or on another plan) and a key, or a key
    of the example tenant with limits of its own: the key's plaintext."""
    now = rfc3339(utcnow())
    tenant_id = EXAMPLE_TENANT
    if billing is not None or plan is not None:
        tenant_id = f"ten_{new_key().key_id[-16:]}"
        container.accounts.create_tenant(TenantRecord(id=tenant_id, name="own", plan=plan or "starter", created_at=now,
                                                      billing=billing or BillingMode()))
    key = new_key()
    container.accounts.create_key(KeyRecord(id=key.key_id, tenant_id=tenant_id, scopes=list(scopes),
                                            key_hash=hash_key(key.plaintext, container.pepper), created_at=now,
                                            limits=limits or LimitOverrides()))
    return key.plaintext


def both_ways(module: Any, container: Any, *events: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The last event's answer through the thin handler and through the resolver, each after
    the same events from the same state (Redis emptied: its tenant state is seeded again from
    the table, as after a loss)."""
    answers = []
    for call in (module.handler, module._resolve):  # the thin route, the resolver's route
        container.redis.flushdb()
        for sent in events:
            answer = call(copy.deepcopy(sent), context_for("invoke"))
        answers.append(answer)
    return answers[0], answers[1]


def assert_same(thin: dict[str, Any], resolved: dict[str, Any], status: int) -> dict[str, Any]:
    assert thin["statusCode"] == status, thin["body"][:300]
    assert json.dumps(thin) == json.dumps(resolved)  # the same keys, headers and body, in the same order
    headers = {name.lower(): values for name, values in thin["multiValueHeaders"].items()}
    assert headers["x-request-id"] == [EVENT["requestContext"]["requestId"]]
    assert headers["cache-control"] == ["no-store"] and headers["x-content-type-options"] == ["nosniff"]
    return {"headers": headers, "body": json.loads(thin["body"])}


@pytest.fixture
def invoke(seeded):  # type: ignore[no-untyped-def]
    """The invoke function, its limiter on one fixed instant: both ways are then asked at the
    same moment, so a Retry-After or a reset cannot differ by the second between them."""
    module = load_invoke()
    now_ms = int(time.time() * 1000)
    module.container.__dict__["limiter"] = RedisLimiter(module.container.redis, lease_ms=seeded.settings.lease_ms,
                                                        clock_ms=lambda: now_ms)
    return module, seeded


ADMITTED = {
    "float": event(),
    "base64 vectors": event(json.dumps({"model": "all-MiniLM-L6-v2", "input": ["a", "b c"],
                                        "encoding_format": "base64"})),
    "base64 body": event(base64.b64encode(GOOD_BODY.encode()).decode(), base64_encoded=True),
    "MPNet": event(json.dumps({"model": "all-mpnet-base-v2", "input": ["a", "b c"]})),
    "MPNet by its alias": event(json.dumps({"model": "sentence-transformers/all-mpnet-base-v2", "input": "a"})),
}


@pytest.mark.parametrize("case", list(ADMITTED))
def test_an_admitted_request_is_answered_alike(invoke, case):
    module, container = invoke
    seen = assert_same(*both_ways(module, container, ADMITTED[case]), 200)
    assert seen["body"]["usage"]["prompt_tokens"] > 0
    assert seen["headers"]["ratelimit-policy"] and seen["headers"]["ratelimit"]


BAD_REQUESTS = {
    "no key": (event(headers={"Authorization": None}), 401, "missing_api_key"),
    "not bearer": (event(headers={"Authorization": "Basic abc"}), 401, "invalid_api_key"),
    "unknown key": (event(key=new_key().plaintext), 401, "invalid_api_key"),
    "two keys": (event(headers={"x-api-key": new_key().plaintext}), 401, "ambiguous_api_key"),
    "not json": (event("{not json"), 400, "invalid_request"),
    "not an object": (event("[1, 2]"), 400, "invalid_request"),
    "a field wrong": (event(json.dumps({"model": "all-MiniLM-L6-v2", "input": 7})), 400, "invalid_request"),
    "an unknown field": (event(json.dumps({"model": "all-MiniLM-L6-v2", "input": "a", "x": 1})), 400,
                         "invalid_request"),
    "bad base64": (event("%%%", base64_encoded=True), 400, "invalid_request"),
    "unknown model": (event(json.dumps({"model": "gpt-4", "input": "a"})), 404, "model_not_found"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_a_refused_request_is_answered_alike(invoke, case):
    module, container = invoke
    sent, status, code = BAD_REQUESTS[case]
    seen = assert_same(*both_ways(module, container, sent), status)
    if code is not None:
        assert seen["body"]["error"]["code"] == code


def test_mpnet_answers_its_768_dimensions_at_its_own_price_alike(invoke):
    # GIVEN the example tenant on the starter plan, which prices MPNet apart from MiniLM
    module, container = invoke
    seen = assert_same(*both_ways(module, container, ADMITTED["MPNet"]), 200)
    body = seen["body"]
    assert body["model"] == "all-mpnet-base-v2" and [len(d["embedding"]) for d in body["data"]] == [768, 768]
    price = container.limits.plan("starter").price_per_1k_tokens["all-mpnet-base-v2"]
    assert Decimal(body["usage"]["cost"]) == Decimal(body["usage"]["prompt_tokens"]) * price / 1000


def test_a_model_outside_the_plan_is_403_model_not_allowed_alike(invoke):
    # GIVEN a tenant on the free plan, which includes MiniLM alone
    module, container = invoke
    key = new_tenant_key(container, plan="free")
    sent = event(json.dumps({"model": "all-mpnet-base-v2", "input": "a"}), key=key)
    seen = assert_same(*both_ways(module, container, sent), 403)
    assert seen["body"]["error"]["code"] == "model_not_allowed" and "'free'" in seen["body"]["error"]["message"]
    assert assert_same(*both_ways(module, container, event(key=key)), 200)["body"]["model"] == "all-MiniLM-L6-v2"


def test_the_wrong_scope_is_403_alike(invoke):
    module, container = invoke
    assert_same(*both_ways(module, container, event(key=example_keys()["admin"])), 403)


def test_a_body_over_the_limit_is_413_alike(invoke):
    module, container = invoke
    too_big = json.dumps({"model": "all-MiniLM-L6-v2", "input": "a" * (container.settings.max_body_bytes + 1)})
    seen = assert_same(*both_ways(module, container, event(too_big)), 413)
    assert seen["body"]["error"]["type"] == "invalid_request_error"


def test_a_rate_limited_request_is_429_with_its_ratelimit_headers_alike(invoke):
    # GIVEN a key allowed one request a minute: the second is refused
    module, container = invoke
    key = new_tenant_key(container, limits=LimitOverrides(requests_per_minute=1))
    seen = assert_same(*both_ways(module, container, event(key=key), event(key=key)), 429)
    assert int(seen["headers"]["retry-after"][0]) >= 1
    assert '"key-requests";q=1;w=60' in seen["headers"]["ratelimit-policy"][0]
    assert '"key-requests";r=0' in seen["headers"]["ratelimit"][0]


def test_prepaid_without_credit_is_402_alike(invoke):
    module, container = invoke
    key = new_tenant_key(container, billing=BillingMode(mode="prepaid"))
    seen = assert_same(*both_ways(module, container, event(key=key)), 402)
    assert seen["body"]["error"]["code"] == "insufficient_credits"


def test_redis_down_is_503_alike(seeded, monkeypatch):
    # GIVEN a function whose Redis refuses connections (the key record comes from the table)
    configure(monkeypatch, seeded.settings.model_copy(
        update={"redis_url": f"redis://127.0.0.1:{free_port()}/0", "redis_timeout_s": 0.5}))
    module = load_invoke()
    thin = module.handler(event(), context_for("invoke"))
    resolved = module._resolve(event(), context_for("invoke"))
    seen = assert_same(thin, resolved, 503)
    assert seen["headers"]["retry-after"] == ["1"]


def test_other_routes_and_methods_go_to_the_resolver(invoke):
    module, _ = invoke
    models = event(None)
    models.update(httpMethod="GET", path="/v1/models", resource="/v1/models")
    listed = module.handler(models, context_for("invoke"))
    assert listed["statusCode"] == 200  # the resolver's route: the plan's models, with their facts
    assert {m["id"]: m["dimensions"] for m in json.loads(listed["body"])["data"]} == {
        "all-MiniLM-L6-v2": 384, "all-mpnet-base-v2": 768}
    for method in ("HEAD", "OPTIONS", "GET"):  # not routed by API Gateway; the resolver's 404 as before
        other = event(None)
        other["httpMethod"] = method
        assert module.handler(other, context_for("invoke"))["statusCode"] == 404
    assert ("POST", "/v1/embeddings") in {(r.method, r.openapi_path) for r in module.app._static_routes}


def test_the_thin_path_logs_with_the_correlation_id_and_publishes_its_metrics_once(invoke, monkeypatch, capsys):
    from aws_lambda_powertools.metrics.provider import cold_start

    from gateway.telemetry import logger

    module, _ = invoke
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    monkeypatch.setattr(cold_start, "is_cold_start", True)  # this module's first invocation
    capsys.readouterr()
    assert module.handler(event(), context_for("invoke"))["statusCode"] == 200
    first = capsys.readouterr().out
    assert emf_metrics(first).keys() >= {"ColdStart", "InferenceLatency", "PromptTokens"}
    assert logger.get_current_keys()["correlation_id"] == EVENT["requestContext"]["requestId"]
    assert module.handler(event(), context_for("invoke"))["statusCode"] == 200
    second = capsys.readouterr().out
    assert len([line for line in second.splitlines() if '"_aws"' in line]) == 1  # one EMF line a request
    assert "ColdStart" not in emf_metrics(second) and emf_metrics(second)["PromptTokens"] > 0


def test_a_refused_request_prints_no_metrics_and_no_warning(invoke, monkeypatch, capsys, recwarn):
    module, _ = invoke
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    module.handler(event(), context_for("invoke"))  # the cold-start metric, once, out of the way
    capsys.readouterr()
    assert module.handler(event(headers={"Authorization": None}), context_for("invoke"))["statusCode"] == 401
    assert emf_metrics(capsys.readouterr().out) == {}
    assert not [w for w in recwarn if "metrics" in str(w.message)]

