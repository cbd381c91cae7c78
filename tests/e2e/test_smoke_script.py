"""The smoke test's HTTP steps (health, one metered request) against the running local stack,
which serves the same routes as API Gateway: what the first deploy will run, here for real."""

from __future__ import annotations

from infra.smoke_test import StepFailed, Targets, http, step_health, step_metered


def targets(stack) -> Targets:  # type: ignore[no-untyped-def]
    return Targets(api_url=stack.api_url.rstrip("/") + "/", stage="local", alarm_name="unused",
                   alarm_topic_arn=None, endpoint_name=None, reconcile_function=None)


def test_health_step(stack):
    assert step_health(targets(stack), http) == "GET /health 200 ok"


def test_metered_step_sees_its_request_in_usage_then_cleans_up(stack, admin):
    result = step_metered(targets(stack), http, stack.admin_key, wait_s=30)
    assert result.startswith("1 request of 6 token(s) metered")  # [CLS] ma ##as smoke test [SEP]
    smoke = [t for t in admin.get("/billing/tenants").json()["data"] if t["name"].startswith("smoke-test-")]
    assert smoke and all(t["status"] == "suspended" for t in smoke)
    for tenant in smoke:
        keys = admin.get(f"/billing/tenants/{tenant['id']}/keys").json()["data"]
        assert keys and all(k.get("revoked_at") or k.get("status") == "revoked" for k in keys), keys


def test_metered_step_fails_with_a_wrong_admin_key(stack):
    try:
        step_metered(targets(stack), http, "maas_sk_not_a_key", wait_s=1)
    except StepFailed as error:
        assert "creating the smoke tenant answered 401" in str(error)
    else:
        raise AssertionError("a wrong admin key must fail the step")
