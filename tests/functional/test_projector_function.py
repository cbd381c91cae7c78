"""ProjectorFunction through its real handler (events/projector/*.json, as `sam local invoke -e`
would), on real Redis and the local DynamoDB: a revocation committed to DynamoDB with its
projection mark but never written to Redis (Redis was lost right after the commit) is projected
by the stream's invocation; the schedule's finds nothing left."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

from gateway.adapters.dynamo import Outbox
from gateway.domain.admission import Ticket, Verdict
from gateway.domain.scopes import Scope
from gateway.models.records import KeyRecord, TenantRecord, rfc3339, utcnow
from gateway.services.seeding import month_bounds
from tests.lambdas import configure, context_for, emf_metrics, handler_for

ROOT = Path(__file__).resolve().parents[2]
TENANT = "ten_EXAMPLE0000000000"  # the tenant the recorded stream event's mark names


def admission(container, key_id: str) -> Verdict:  # type: ignore[no-untyped-def]
    limits = container.limits.for_tenant(container.accounts.get_tenant(TENANT, consistent=True))
    ticket = Ticket(tenant_id=TENANT, key_id=key_id, key_expires_ms=0, limits=limits, tokens=1,
                    request_id=uuid.uuid4().hex, month=datetime.now(UTC).strftime("%Y-%m"))
    decision = container.limiter.admit(ticket)
    container.limiter.settle(ticket, decision, charge=False)
    return decision.verdict


def test_a_missed_revocation_is_projected_by_the_stream_then_nothing_is_left(container, monkeypatch, capsys):
    # GIVEN a tenant with a key, seeded in Redis
    now = rfc3339(utcnow())
    container.accounts.create_tenant(TenantRecord(id=TENANT, name="Example", plan="starter", created_at=now))
    key = KeyRecord(id="key_projected0000", tenant_id=TENANT, scopes=[Scope.INFERENCE.value], key_hash="0" * 64,
                    created_at=now)
    container.accounts.create_key(key)
    _, _, start_ms, end_ms = month_bounds(utcnow())
    container.limiter.seed(container.seeder.state(TENANT), month_start_ms=start_ms, month_end_ms=end_ms)
    assert admission(container, key.id) is Verdict.OK
    # AND its revocation committed with a projection mark, as the billing API commits it, but
    # never written to Redis
    outbox = Outbox(container.table)
    revoked = key.model_copy(update={"revoked_at": rfc3339(utcnow())})
    container.table.transact([container.accounts.key_write(revoked, expected=key),
                              outbox.mark_write(TENANT, "0f8e2d4c6b1a49e3a5c7d9f1b3e5a7c9")], conflict="test")
    assert admission(container, key.id) is Verdict.OK  # Redis does not know yet
    configure(monkeypatch, container.settings)
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    handler = handler_for("projector")

    # WHEN the stream wakes the function with the mark
    event = json.loads((ROOT / "events" / "projector" / "stream.json").read_text())
    capsys.readouterr()
    assert handler(event, context_for("projector")) == {"repaired": 1, "pending": 0}
    # THEN Redis says what DynamoDB says, the mark is gone, and the metrics say so
    assert admission(container, key.id) is Verdict.KEY_REVOKED
    assert outbox.pending() == []
    metrics = emf_metrics(capsys.readouterr().out)
    assert (metrics["ProjectionsRepaired"], metrics["ProjectionsPending"]) == (1, 0)

    # AND the every-minute run finds nothing left to do
    scheduled = json.loads((ROOT / "events" / "projector" / "scheduled.json").read_text())
    assert handler(scheduled, context_for("projector")) == {"repaired": 0, "pending": 0}
