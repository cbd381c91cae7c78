from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.domain.keys import hash_key, new_key
from gateway.domain.plans import LimitOverrides
from gateway.domain.scopes import Scope
from gateway.models.records import KeyRecord, TenantRecord, rfc3339, utcnow
from gateway.services.auth import Principal
from infra.local.services import ROOT, Service, free_port, inference_service


@pytest.fixture(scope="session")
def inference_url(service_logs: Path) -> Iterator[str]:
    """The real inference server (exported ONNX model, CPU provider)."""
    model_dir = ROOT / ".maas" / "model"
    if not (model_dir / "model.onnx").exists():
        pytest.fail("the ONNX model is missing: run `make model` (make test does it)")
    service = inference_service(free_port(), model_dir, service_logs).start(timeout_s=180)
    yield f"http://127.0.0.1:{service.port}"
    service.stop()


def make_principal(container, *, plan: str = "starter", overrides: LimitOverrides | None = None,
                   scopes: tuple[Scope, ...] = (Scope.INFERENCE, Scope.USAGE_READ)) -> tuple[Principal, str]:
    """A tenant with a key, written straight to the store; returns the caller and its key."""
    tenant = TenantRecord(id=f"ten_{new_key().key_id[4:]}", name="t", plan=plan, created_at=rfc3339(utcnow()),
                          limit_overrides=overrides or LimitOverrides())
    container.accounts.create_tenant(tenant)
    issued = new_key()
    key = KeyRecord(id=issued.key_id, tenant_id=tenant.id, scopes=[s.value for s in scopes],
                    key_hash=hash_key(issued.plaintext, container.pepper), created_at=rfc3339(utcnow()))
    container.accounts.create_key(key)
    return Principal(key=key, tenant=tenant), issued.plaintext


__all__ = ["Service", "make_principal", "seed_empty"]


def seed_empty(limiter, *tenant_ids: str, month: str = "2026-11") -> None:
    """Tell the Redis limiter these tenants are new (nothing charged yet), as creating them does."""
    from gateway.domain.admission import TenantState
    from gateway.services.seeding import month_bounds

    start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    _, _, start_ms, end_ms = month_bounds(start)
    for tenant_id in tenant_ids:
        limiter.seed(TenantState.empty(tenant_id, month), month_start_ms=start_ms, month_end_ms=end_ms)
