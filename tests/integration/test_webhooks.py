"""Events and webhooks against real parts: moto's DynamoDB server, real HTTP receivers on
127.0.0.1 that verify the signatures, real dispatcher processes killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

from gateway.adapters.dynamo.table import item_key
from gateway.adapters.webhook_sender import WebhookSender
from gateway.domain.events import Event, EventType, event_id
from gateway.domain.keys import new_key
from gateway.domain.scopes import Scope
from gateway.errors import InvalidRequestError, NotFoundError
from gateway.models.records import KeyRecord, rfc3339, utcnow
from gateway.models.webhooks import CreateWebhook
from gateway.services.calls import Call
from gateway.services.webhook_delivery import AttemptResult
from gateway.services.webhook_worker import DeliveryPool
from gateway.wiring import Container
from infra.local.services import ROOT
from tests.integration.conftest import make_principal
from tests.integration.crashing_dispatcher import events_for
from tests.webhook_receiver import Receiver

TIMEOUT_S = 2.0


@pytest.fixture
def hooks(container):  # type: ignore[no-untyped-def]
    """The container of a delivery worker on the local stack (http://127.0.0.1 receivers)."""
    settings = container.settings.model_copy(update={"webhook_allow_local_http": True, "webhook_timeout_s": TIMEOUT_S})
    c = Container(settings, dynamodb=container.dynamodb, redis=container.redis)
    c.admin = make_principal(container, scopes=(Scope.ADMIN,))[0]
    yield c
    c.delivery_pool.drain(timeout_s=TIMEOUT_S + 1)


@pytest.fixture
def receiver():  # type: ignore[no-untyped-def]
    made: list[Receiver] = []

    def make(**kwargs) -> Receiver:  # type: ignore[no-untyped-def]
        made.append(Receiver(**kwargs))
        return made[-1]

    yield make
    for r in made:
        r.close()


def subscribe(c: Container, target: Receiver, *types: EventType) -> dict:
    created = c.webhook_service.create(
        CreateWebhook(url=target.url, events=list(types or [EventType.CREDITS_LOW])), Call(c.admin, "req-test")
    )
    target.secret = created["secret"]
    return created


def an_event(
    cause: str,
    *,
    tenant_id: str = "ten_a",
    kind: EventType = EventType.CREDITS_LOW,
    created: int | None = None,
    data: dict | None = None,
) -> Event:
    return Event(
        id=event_id("test", cause),
        type=kind,
        created=created or int(time.time()),
        tenant_id=tenant_id,
        data=data if data is not None else {"cause": cause},
    )


def work_until(c: Container, done, timeout_s: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    """Passes of the delivery worker (as the local loop runs them) until ``done()``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        c.webhook_worker.tick()
        if done():
            return
        time.sleep(0.1)
    raise AssertionError("not done in time")


def delivery(c: Container, webhook: dict, event: Event) -> dict:
    found = c.deliveries.get(webhook["id"], event.id)
    assert found is not None
    return found.public()


# -- storing ---------------------------------------------------------------------------------


def test_an_event_written_twice_in_transactions_is_stored_once_with_its_first_content(hooks):
    # GIVEN an event written with an audit entry in one transaction (as the billing service does)
    first = an_event("revoked", kind=EventType.KEY_REVOKED, created=1_800_000_000, data={"key_id": "key_1"})
    entry = {"id": "a1", "timestamp": rfc3339(utcnow())}
    hooks.table.transact([hooks.event_log.event_write(first), hooks.audit.entry_write(entry)], conflict="x")
    # WHEN the same cause is written again, later and with other data, in another transaction
    again = Event(id=first.id, type=first.type, created=1_800_000_500, tenant_id="ten_a", data={"other": 1})
    hooks.table.transact(
        [hooks.event_log.event_write(again), hooks.audit.entry_write(entry | {"id": "a2"})], conflict="x"
    )
    # THEN both transactions committed, the event is stored once, as first written, and queued once
    assert hooks.event_log.get(first.id) == first
    assert [e.id for e in hooks.event_log.undispatched()] == [first.id]
    assert hooks.event_log.record([again]) == []


def test_record_stores_new_events_only(hooks):
    a, b = an_event("a"), an_event("b")
    assert hooks.event_log.record([a, a]) == [a]
    assert hooks.event_log.record([a, b]) == [b]
    assert {e.id for e in hooks.event_log.undispatched()} == {a.id, b.id}


# -- delivering ------------------------------------------------------------------------------


def test_delivery_is_signed_and_the_receiver_verifies_it(hooks, receiver):
    target = receiver()
    webhook = subscribe(hooks, target, EventType.CREDITS_LOW)
    other = receiver()
    subscribe(hooks, other, EventType.KEY_REVOKED)
    event = an_event("low", data={"remaining": "0.50", "currency": "USD"})
    hooks.event_log.record([event])

    work_until(hooks, lambda: target.received)

    (request,) = target.wait_for(1)
    assert request.verified is True
    assert request.headers["Content-Type"] == "application/json"
    assert request.event == event.body() and request.path == "/hooks"
    assert delivery(hooks, webhook, event) | {"history": None, "created_at": None, "last_attempt_at": None} == {
        "object": "webhook_delivery",
        "webhook_id": webhook["id"],
        "event_id": event.id,
        "event_type": "credits.low",
        "status": "delivered",
        "attempts": 1,
        "last_status_code": 200,
        "last_error": None,
        "next_attempt_at": None,
        "history": None,
        "created_at": None,
        "last_attempt_at": None,
    }
    assert other.received == []  # subscribed to another type
    assert hooks.event_log.undispatched() == []


def test_a_receiver_answering_500_then_200_gets_the_event_again_and_the_log_shows_both(hooks, receiver):
    target = receiver(statuses=[500, 200])
    webhook = subscribe(hooks, target)
    event = an_event("flaky")
    hooks.event_log.record([event])

    work_until(hooks, lambda: delivery(hooks, webhook, event)["status"] == "delivered")

    first, second = target.wait_for(2)
    assert first.event["id"] == second.event["id"] == event.id and first.verified and second.verified
    # (the backoff's schedule, 1 s less up to half of jitter, is tests/unit/test_webhook_rules.py's)
    assert target.answered == 2  # (wait_for gives them in the order they came)
    log = delivery(hooks, webhook, event)
    assert (log["status"], log["attempts"], log["last_status_code"]) == ("delivered", 2, 200)
    assert [(a["status_code"], a["error"]) for a in log["history"]] == [(500, "HTTP 500"), (200, None)]
    listed, _ = hooks.webhook_service.list_deliveries(webhook["id"], None, 10)
    assert listed == [log]


def test_a_hanging_receiver_does_not_delay_another_receivers_delivery(hooks, receiver):
    hanging = receiver(hang_s=60)  # until the test closes it: far past the sender's timeout
    # the prompt receiver notes, as its request arrives, whether the hanging one's attempt is
    # still open (sent, not timed out: nothing recorded in its delivery yet)
    def hanging_error() -> str | None:  # (no delivery record yet: not even attempted)
        found = hooks.deliveries.get(slow_hook["id"], event.id)
        return None if found is None else found.public()["last_error"]

    prompt = receiver(on_request=hanging_error)
    slow_hook = subscribe(hooks, hanging)
    subscribe(hooks, prompt)
    event = an_event("both")
    hooks.event_log.record([event])
    work_until(hooks, lambda: prompt.received)
    (request,) = prompt.wait_for(1)
    # THEN the prompt receiver had it while the other's attempt was still open, so it did not
    # wait for that one's timeout
    assert request.verified and hanging.wait_for(1) and hanging.answered == 0
    assert request.seen is None, request.seen
    # AND the hanging one's attempt timed out and waits for its retry
    results = hooks.delivery_pool.drain(timeout_s=TIMEOUT_S + 2)
    assert AttemptResult.RETRYING in results
    log = delivery(hooks, slow_hook, event)
    assert log["status"] == "pending" and log["last_status_code"] is None and "timed out" in log["last_error"]


def test_a_hanging_receivers_backlog_does_not_hide_another_receivers_retries(hooks, receiver):
    # GIVEN a receiver that hangs with 6 deliveries due, older than another receiver's one
    hanging, prompt = receiver(hang_s=TIMEOUT_S + 2), receiver()
    slow_hook, quick_hook = subscribe(hooks, hanging), subscribe(hooks, prompt)
    backlog = [an_event(f"backlog{n}") for n in range(6)]
    for event in backlog:
        hooks.deliveries.open(slow_hook["id"], event, now_ms=1_000 + len(event.id))
    late = an_event("late")
    hooks.event_log.record([*backlog, late])
    hooks.event_log.mark_dispatched([*backlog, late])
    hooks.deliveries.open(quick_hook["id"], late, now_ms=2_000_000)
    # WHEN a retry pass runs with room for 2 attempts per receiver
    pool = DeliveryPool(workers=8, per_webhook=2)
    try:
        assert hooks.deliverer.retry_due(pool) == 3
        # THEN the other receiver's retry went out at once, and only 2 of the hanging one's
        (request,) = prompt.wait_for(1, timeout_s=2)
        assert request.event["id"] == late.id and len(hanging.wait_for(2)) == 2
    finally:
        pool.drain(timeout_s=TIMEOUT_S + 2)


def test_a_secret_sealed_under_another_pepper_is_a_logged_failure(hooks, receiver):
    target = receiver()
    webhook = subscribe(hooks, target)
    rotated = Container(hooks.settings.model_copy(update={"key_pepper": "another-pepper"}), dynamodb=hooks.dynamodb)
    event = an_event("rotated")
    rotated.event_log.record([event])
    work_until(rotated, lambda: delivery(hooks, webhook, event)["attempts"] == 1)
    log = delivery(hooks, webhook, event)
    assert log["status"] == "pending" and "cannot be unsealed" in log["last_error"] and target.received == []
    rotated.delivery_pool.drain(timeout_s=3)


def test_an_event_stored_and_dispatched_twice_is_delivered_once_per_webhook(hooks, receiver):
    a, b = receiver(), receiver()
    subscribe(hooks, a)
    subscribe(hooks, b)
    event = an_event("twice")
    hooks.event_log.record([event])
    hooks.table.transact([hooks.event_log.event_write(event)], conflict="x")
    work_until(hooks, lambda: a.received and b.received)
    # a second dispatch of the same event (a publisher retrying, a second worker) opens nothing
    assert hooks.deliverer.deliver(event, hooks.delivery_pool) == 0
    hooks.event_log.record([event])
    for _ in range(5):
        hooks.webhook_worker.tick()
        time.sleep(0.1)
    hooks.delivery_pool.drain(timeout_s=3)
    assert a.event_ids() == [event.id] and b.event_ids() == [event.id]


@pytest.mark.parametrize("crash_at", ["stored", "after_read", "after_publish"])
def test_the_outbox_survives_a_dispatcher_killed_mid_way(hooks, receiver, crash_at):
    # GIVEN a webhook, and a dispatcher process that stores three events and is SIGKILLed at a step
    target = receiver()
    webhook = subscribe(hooks, target)
    seed = f"{crash_at}-{time.time_ns()}"
    env = {**os.environ, **hooks.settings.to_env()}
    crashed = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.integration.crashing_dispatcher",
            "--seed",
            seed,
            "--events",
            "3",
            "--crash-at",
            crash_at,
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        timeout=60,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()[-2000:]
    events = events_for(seed, 3)
    assert {e.id for e in hooks.event_log.undispatched()} == {e.id for e in events}  # still in the outbox
    # WHEN another worker runs
    work_until(
        hooks,
        lambda: all(
            (d := hooks.deliveries.get(webhook["id"], e.id)) is not None and d.status == "delivered" for e in events
        ),
    )
    hooks.delivery_pool.drain(timeout_s=3)
    # THEN every event reached the receiver exactly once, and the outbox is empty
    assert sorted(target.event_ids()) == sorted(e.id for e in events)
    assert hooks.event_log.undispatched() == []


def test_a_url_that_comes_to_resolve_to_a_private_address_is_refused_at_delivery(hooks, receiver):
    # GIVEN (in AWS mode) a webhook whose host resolved to a public address when it was created
    answers = {"hooks.example": ["93.184.215.14"]}
    sender = WebhookSender(allow_local_http=False, timeout_s=TIMEOUT_S, resolver=lambda host, port: answers[host])
    hooks.__dict__["webhook_sender"] = sender
    webhook = hooks.webhook_service.create(
        CreateWebhook(url="https://hooks.example/in", events=["credits.low"]), Call(hooks.admin, "req")
    )
    # WHEN its name now resolves to the cloud metadata address
    answers["hooks.example"] = ["169.254.169.254"]
    event = an_event("rebind")
    hooks.event_log.record([event])
    work_until(hooks, lambda: delivery(hooks, webhook, event)["attempts"] == 1)
    # THEN nothing was sent there: the attempt is logged as refused, and retried later
    log = delivery(hooks, webhook, event)
    assert log["status"] == "pending" and log["last_status_code"] is None
    assert log["last_error"].startswith("refused") and "169.254.169.254" in log["last_error"]


def test_a_webhook_url_is_checked_at_creation(hooks):
    # In AWS (no local http): https to public addresses only; the local stack's receivers are refused.
    aws = Container(hooks.settings.model_copy(update={"webhook_allow_local_http": False}), dynamodb=hooks.dynamodb)
    for url, says in (
        ("https://169.254.169.254/latest", "link-local"),
        ("https://[::1]:8443/x", "loopback"),
        ("http://127.0.0.1:9/x", "https"),
        ("https://10.0.0.2/x", "private"),
    ):
        with pytest.raises(InvalidRequestError, match=says) as refused:
            aws.webhook_service.create(CreateWebhook(url=url, events=["credits.low"]), Call(hooks.admin, "req"))
        assert refused.value.param == "url"
    assert aws.webhooks.all() == []
    # The local stack takes http://127.0.0.1 and http://localhost, no other plain http, and
    # refuses the private and metadata addresses all the same.
    for url in ("https://169.254.169.254/latest", "https://192.168.1.10/x"):
        with pytest.raises(InvalidRequestError, match="non-public"):
            hooks.webhook_service.create(CreateWebhook(url=url, events=["credits.low"]), Call(hooks.admin, "req"))
    assert (
        hooks.webhook_service.create(
            CreateWebhook(url="http://localhost:9/x", events=["credits.low"]), Call(hooks.admin, "req")
        )["url"]
        == "http://localhost:9/x"
    )
    with pytest.raises(InvalidRequestError, match="https"):
        hooks.webhook_service.create(
            CreateWebhook(url="http://example.com/x", events=["credits.low"]), Call(hooks.admin, "req")
        )


def test_the_signing_secret_is_not_readable_from_the_table(hooks, receiver):
    webhook = subscribe(hooks, receiver())
    raw = hooks.dynamodb.get_item(
        TableName=hooks.settings.table_name, Key={"pk": {"S": "WEBHOOKS"}, "sk": {"S": webhook["id"]}}
    )["Item"]
    assert webhook["secret"].startswith("whsec_") and webhook["secret"] not in str(raw)
    assert webhook["secret"][6:] not in str(raw)
    assert hooks.webhooks.get_with_secret(webhook["id"])[1] == webhook["secret"]
    assert "secret" not in hooks.webhook_service.list_webhooks()[0]


def test_a_deleted_webhooks_pending_deliveries_are_given_up(hooks, receiver):
    target = receiver(statuses=[503])
    webhook = subscribe(hooks, target)
    event = an_event("gone")
    hooks.event_log.record([event])
    work_until(hooks, lambda: delivery(hooks, webhook, event)["attempts"] == 1)
    hooks.webhook_service.delete(webhook["id"], Call(hooks.admin, "req"))
    work_until(hooks, lambda: delivery(hooks, webhook, event)["status"] == "failed")
    log = delivery(hooks, webhook, event)
    assert log["last_error"] == "the webhook was deleted" and len(target.received) == 1
    with pytest.raises(NotFoundError):
        hooks.webhook_service.delete(webhook["id"], Call(hooks.admin, "req"))
    actions = [e["action"] for e in hooks.billing.list_audit(None, 10)[0]]
    assert actions[:2] == ["webhook.delete", "webhook.create"]


# -- the listing -----------------------------------------------------------------------------


def test_events_are_listed_newest_first_with_filters_and_pagination(hooks):
    # GIVEN 9 events of two tenants and two types, some dispatched, some still in the outbox
    base = 1_800_000_000
    events = [
        an_event(
            f"e{n}",
            tenant_id=("ten_a", "ten_b")[n % 2],
            created=base + n,
            kind=(EventType.CREDITS_LOW, EventType.KEY_REVOKED)[n % 3 == 0],
        )
        for n in range(9)
    ]
    hooks.event_log.record(events)
    hooks.event_log.mark_dispatched(events[2:6])
    newest_first = sorted(events, key=lambda e: e.created, reverse=True)

    def pages(**filters) -> list[list[str]]:  # type: ignore[no-untyped-def]
        found, cursor = [], None
        while True:
            page, cursor = hooks.event_log.list(cursor=cursor, limit=2, **filters)
            found.append([e.id for e in page])
            if not cursor:
                return found

    everything = pages()
    assert [i for page in everything for i in page] == [e.id for e in newest_first]
    assert all(len(page) == 2 for page in everything[:-1])
    for filters in (
        {"tenant_id": "ten_a"},
        {"type": EventType.KEY_REVOKED},
        {"tenant_id": "ten_b", "type": EventType.CREDITS_LOW},
        {"tenant_id": "ten_none"},
    ):
        expected = [
            e.id
            for e in newest_first
            if e.tenant_id == filters.get("tenant_id", e.tenant_id) and e.type == filters.get("type", e.type)
        ]
        assert [i for page in pages(**filters) for i in page] == expected, filters
    with pytest.raises(InvalidRequestError) as bad:
        hooks.event_log.list(cursor="bm90LWEtY3Vyc29y")
    assert bad.value.param == "cursor"


# -- key.expiring ----------------------------------------------------------------------------


def test_the_sweeper_emits_one_key_expiring_event_per_key_expiring_within_a_week(hooks):
    tenant = make_principal(hooks)[0].tenant
    now = datetime.now(UTC).replace(microsecond=0)

    def key(
        expires_in: timedelta | None,
        *,
        revoked: bool = False,
        index_at: datetime | None = None,
        grace: timedelta | None = None,
    ) -> str:
        expires_at = now + expires_in if expires_in is not None else None
        grace_until = now + grace if grace is not None else None
        record = KeyRecord(
            id=new_key().key_id,
            tenant_id=tenant.id,
            scopes=["inference"],
            key_hash="x",
            created_at=rfc3339(now),
            expires_at=rfc3339(expires_at) if expires_at else None,
            grace_until=rfc3339(grace_until) if grace_until else None,
            revoked_at=rfc3339(now) if revoked else None,
        )
        hooks.accounts.create_key(record)
        stops = min(m for m in (expires_at, grace_until) if m is not None)
        hooks.event_log.put_key_expiry(record.id, tenant.id, index_at or stops)
        return record.id

    soon = key(timedelta(days=3))
    rotated = key(None, grace=timedelta(days=2))  # a rotated key: it stops when its grace ends
    key(timedelta(days=9))  # too far
    key(timedelta(days=2), revoked=True)  # revoked: no warning
    key(timedelta(days=20), index_at=now + timedelta(days=1))  # a stale index entry (expiry moved)
    key(-timedelta(hours=1))  # already expired

    def moment(delta: timedelta) -> str:
        return (now + delta).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    emitted = hooks.key_expiry_sweeper.sweep()
    assert {(e.type, e.tenant_id, e.data["key_id"], e.data["expires_at"]) for e in emitted} == {
        (EventType.KEY_EXPIRING, tenant.id, soon, moment(timedelta(days=3))),
        (EventType.KEY_EXPIRING, tenant.id, rotated, moment(timedelta(days=2))),
    }
    assert {e.id for e in emitted} == {
        event_id("key.expiring", soon, moment(timedelta(days=3))),
        event_id("key.expiring", rotated, moment(timedelta(days=2))),
    }
    assert hooks.key_expiry_sweeper.sweep() == []  # the next day's sweep emits them no more
    assert {e.id for e in hooks.event_log.undispatched()} == {e.id for e in emitted}
    assert hooks.table.get(item_key("KEYEXP", (now + timedelta(days=3)).date().isoformat()), soon) is not None
