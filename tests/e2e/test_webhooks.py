"""Webhooks on the running local stack (what `make dev` starts): its delivery loop reaches an
http://127.0.0.1 receiver once an event is stored, signed; the API and the
`maas` CLI show the webhook, the delivery and the event."""

from __future__ import annotations

import json
import time

from gateway.cli import main as maas
from gateway.domain.events import Event, EventType, event_id
from tests.webhook_receiver import Receiver


def test_a_stored_event_reaches_a_local_receiver(stack, admin, tenant, capsys):
    receiver = Receiver()
    try:
        created = admin.post("/billing/webhooks", json={"url": receiver.url, "events": ["tenant.suspended"]})
        assert created.status_code == 201, created.text
        webhook = created.json()
        receiver.secret = webhook["secret"]
        # GIVEN an event stored as the billing service stores it (in its own write: the outbox)
        event = Event(id=event_id("e2e", tenant["id"], str(time.time_ns())), type=EventType.TENANT_SUSPENDED,
                      created=int(time.time()), tenant_id=tenant["id"], data={"status": "suspended"})
        stack.container.table.transact([stack.container.event_log.event_write(event)], conflict="e2e")
        # THEN the stack's own loop delivers it, signed (waited for with a deadline a loaded
        # machine meets: how soon is a benchmark's, tests/performance/bench_webhooks.py)
        request = receiver.wait_for_matching(lambda e: e["id"] == event.id, timeout_s=60)
        assert request.verified is True and request.event == event.body()

        deliveries = admin.get(f"/billing/webhooks/{webhook['id']}/deliveries")
        # (the stack is shared: other tests' tenant.suspended events may reach this webhook too)
        (log,) = [d for d in deliveries.json()["data"] if d["event_id"] == event.id]
        assert (log["event_id"], log["status"], log["attempts"], log["last_status_code"]) == (
            event.id, "delivered", 1, 200)
        listed = admin.get("/billing/events", params={"tenant_id": tenant["id"], "type": "tenant.suspended"})
        assert listed.json()["data"] == [event.body()]

        # The CLI says the same.
        flags = ["--url", stack.api_url, "--key", stack.admin_key, "--json"]
        assert maas(["webhooks", "list", *flags]) == 0
        assert webhook["id"] in [w["id"] for w in json.loads(capsys.readouterr().out)["data"]]
        assert maas(["webhooks", "deliveries", webhook["id"], *flags]) == 0
        statuses = {d["event_id"]: d["status"] for d in json.loads(capsys.readouterr().out)["data"]}
        assert statuses[event.id] == "delivered"
        assert maas(["events", "--tenant-id", tenant["id"], *flags]) == 0
        assert json.loads(capsys.readouterr().out)["data"] == [event.body()]
        assert maas(["webhooks", "add", receiver.url, "--event", "key.revoked", *flags]) == 0
        assert json.loads(capsys.readouterr().out)["secret"].startswith("whsec_")
    finally:
        receiver.close()
