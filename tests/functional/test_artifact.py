"""The artifact that ships, not the source tree: every function from its CodeUri and the layer
alone (tests/artifact.py) imports, builds every client its container offers, and serves its
recorded events against the local services: each API route, a flush, a webhook delivery, the
projector, the reconcile schedule and the flush dispatcher."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.domain.events import Event, EventType, event_id
from gateway.domain.scopes import Scope
from gateway.models.webhooks import CreateWebhook
from gateway.services.calls import Call
from gateway.wiring import Container
from tests.artifact import ArtifactHandler, function_code_uris
from tests.functional.conftest import EVENTS, EXAMPLE_TENANT, ROOT
from tests.functional.test_batch_functions import run_a_batch
from tests.functional.test_events import NOT_API, check_recorded_event
from tests.integration.conftest import make_principal
from tests.lambdas import configure, context_for
from tests.webhook_receiver import Receiver

# pytest-xdist (make test): the artifact tests share one worker: the runtime venv under
# .maas/artifact-runtime is built once, never by two workers at once.
pytestmark = pytest.mark.xdist_group("artifact")

FUNCTIONS = sorted(set(function_code_uris().values()))


def recorded(path: str) -> dict:
    return json.loads((ROOT / "events" / path).read_text())


@pytest.fixture
def shipped(artifact) -> Iterator:  # type: ignore[no-untyped-def]
    """`shipped("invoke")` is that function's handler as it ships; its process ends with the test."""
    started: list[ArtifactHandler] = []

    def handler(function_dir: str) -> ArtifactHandler:
        started.append(artifact.handler(function_dir))
        return started[-1]

    yield handler
    for one in started:
        one.stop()


@pytest.mark.parametrize("function_dir", FUNCTIONS)
def test_each_function_imports_and_builds_every_client_from_the_artifact_alone(seeded, shipped, artifact,
                                                                                function_dir, monkeypatch):
    # The dispatcher's one setting of its own (the template gives it the flusher's name).
    monkeypatch.setenv("MAAS_FLUSH_WORKER_FUNCTION", "maas-flusher")
    report = shipped(function_dir).start()
    assert report["failed"] == {}, f"functions/{function_dir}: clients the artifact cannot build"
    if function_dir != "console":  # the console serves files: it has no container
        assert {"inference", "limiter", "accounts", "flusher", "webhook_service"} <= set(report["built"])
    # Nothing came from the source tree: only the CodeUri copy, the layer and the runtime.
    from_tree = [m for m in report["modules"] if m.startswith(f"{ROOT}/") and "/.maas/artifact-runtime/" not in m]
    assert from_tree == []
    assert any(m.startswith(f"{artifact.layer}/gateway/") for m in report["modules"]) or function_dir == "console"


@pytest.mark.parametrize("path", [p for p in EVENTS if p.parent.name not in NOT_API],
                         ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recorded_api_event_through_the_artifact(seeded, shipped, path):
    check_recorded_event(path, shipped(path.parent.name))


def test_an_embeddings_request_is_flushed_to_the_ledger_by_the_shipped_flusher(seeded, shipped):
    answer = shipped("invoke")(recorded("invoke/embeddings.json"), context_for("invoke"))
    assert answer["statusCode"] == 200, answer["body"][:300]
    assert shipped("flusher")(recorded("flusher/scheduled.json"), context_for("flusher"))["written"] == 1
    (row,) = seeded.usage.ledger_all(EXAMPLE_TENANT, "2000-01-01", "2100-01-01")
    assert row["prompt_tokens"] == json.loads(answer["body"])["usage"]["prompt_tokens"]


def test_the_shipped_delivery_function_delivers_a_signed_webhook(container, shipped, monkeypatch):
    # An unseeded table: the example webhook of events/ points at a public address.
    settings = container.settings.model_copy(update={"webhook_allow_local_http": True, "webhook_timeout_s": 5.0})
    configure(monkeypatch, settings)
    container = Container(settings, dynamodb=container.dynamodb, redis=container.redis)
    receiver = Receiver()
    try:
        admin = make_principal(container, scopes=(Scope.ADMIN,))[0]
        receiver.secret = container.webhook_service.create(
            CreateWebhook(url=receiver.url, events=["credits.low"]), Call(admin, "req"))["secret"]
        event = Event(id=event_id("artifact", receiver.url), type=EventType.CREDITS_LOW, created=int(time.time()),
                      tenant_id=EXAMPLE_TENANT, data={"credits_remaining": "0.5"})
        container.event_log.record([event])
        # WHEN the every-minute pass of the shipped function runs
        result = shipped("delivery")(recorded("delivery/retry.json"), context_for("delivery"))
        # THEN the receiver has the event, signed with the webhook's secret
        assert (result["dispatched"], result["delivered"]) == (1, 1), result
        (request,) = receiver.wait_for(1)
        assert request.verified is True and request.event == event.body()
    finally:
        receiver.close()


def test_the_shipped_schedules_run_clean(seeded, shipped, moto, monkeypatch):
    # No batch in progress: the batch worker makes no pass.
    assert shipped("batch_worker")(recorded("batch_worker/scheduled.json"), context_for("batch_worker")) == {
        "passes": 0}
    # The reconcile schedule publishes its drift to CloudWatch (moto's here).
    monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDWATCH", f"http://127.0.0.1:{moto.port}")
    assert shipped("projector")(recorded("projector/scheduled.json"), context_for("projector")) is not None
    assert shipped("reconcile")(recorded("reconcile/scheduled.json"), context_for("reconcile")) is not None
    # No active tenant: the dispatcher starts no worker.
    dispatched = shipped("flush_dispatcher")(recorded("flush_dispatcher/scheduled.json"),
                                             context_for("flush_dispatcher"))
    assert dispatched is not None


def test_a_batch_runs_through_the_shipped_functions_with_its_files_in_s3(seeded, shipped, files_in_s3):
    # The Batch API's modules, the multipart parser and the S3 client, from the layer alone.
    run_a_batch(shipped("invoke"), shipped("batch_worker"))


def test_every_function_dir_is_tested(artifact):
    assert {p.name for p in Path(ROOT / "functions").iterdir() if (p / "app.py").exists()} == set(FUNCTIONS)
