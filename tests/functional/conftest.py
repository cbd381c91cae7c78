"""Functional tests: the handlers driven by events/*.json, from the source tree and from the
artifact that ships (tests/artifact.py), against a table seeded with the events' example tenant
and keys (real Redis, the local DynamoDB, the real inference server)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.domain.events import Event, EventType, event_id
from gateway.domain.keys import hash_key, parse_key
from gateway.domain.webhooks import Webhook
from gateway.models.records import KeyRecord, TenantRecord, rfc3339, utcnow
from tests.artifact import Artifact, build_layer, find_python312, runtime_python
from tests.integration.conftest import inference_url  # noqa: F401 - the real inference server, shared
from tests.lambdas import configure

ROOT = Path(__file__).resolve().parents[2]
EVENTS = sorted((ROOT / "events").glob("*/*.json"))
EXAMPLE_TENANT = "ten_EXAMPLE0000000000"
EXAMPLE_WEBHOOK = "wh_0123456789abcdef01234567"
SCOPES = {"admin": ["admin"], "finance": ["finance"], "tenant": ["inference", "usage:read"]}


def example_keys() -> dict[str, str]:
    """The example keys the recorded events carry, by their role."""
    found = {}
    for path in EVENTS:
        auth = (json.loads(path.read_text()).get("headers") or {}).get("Authorization", "")
        key = auth.removeprefix("Bearer ")
        role = next((r for r in SCOPES if f"EXAMPLE{r}" in key), None)
        if role and key:
            found[role] = key
    return found


@pytest.fixture
def seeded(container, inference_url, monkeypatch, tmp_path):  # type: ignore[no-untyped-def]  # noqa: F811
    # The handlers build their container from the environment, as in Lambda.
    configure(monkeypatch, container.settings.model_copy(update={"inference_url": inference_url,
                                                                 "files_dir": str(tmp_path / "files")}))
    now = rfc3339(utcnow())
    container.accounts.create_tenant(TenantRecord(id=EXAMPLE_TENANT, name="Example", plan="starter", created_at=now))
    container.accounts.create_tenant(TenantRecord(id="tn_operators", name="ops", plan="internal", created_at=now))
    for role, plaintext in example_keys().items():
        parsed = parse_key(plaintext)
        assert parsed is not None, f"the example {role} key in events/ must be well formed"
        container.accounts.create_key(KeyRecord(
            id=parsed.key_id, tenant_id=EXAMPLE_TENANT if role == "tenant" else "tn_operators",
            scopes=SCOPES[role], key_hash=hash_key(plaintext, container.pepper), created_at=now))
    seed_webhook_and_event(container)
    return container


def seed_webhook_and_event(container) -> None:  # type: ignore[no-untyped-def]
    """The example webhook, and one event it has a delivery of (what the webhooks samples read)."""
    webhook = Webhook(id=EXAMPLE_WEBHOOK, url="https://93.184.215.14/maas/webhooks", events=(EventType.KEY_REVOKED,),
                      created_at=rfc3339(utcnow()))
    container.table.transact([container.webhooks.new_write(webhook, "whsec_example")], conflict="seeded")
    revoked = Event(id=event_id("example", "key.revoked"), type=EventType.KEY_REVOKED, created=1795953613,
                    tenant_id=EXAMPLE_TENANT, data={"key_id": "key_EXAMPLEtenant000"})
    container.event_log.record([revoked])
    container.deliveries.open(EXAMPLE_WEBHOOK, revoked, now_ms=1795953613000)



@pytest.fixture(scope="session")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Artifact]:
    """The layer and the CodeUris as they ship, and Python 3.12 with only boto3 (tests/artifact.py)."""
    python312 = find_python312()
    if not python312:
        pytest.fail("the artifact tests need python3.12, the functions' runtime (make test finds it)")
    work = tmp_path_factory.mktemp("artifact")
    layer = build_layer(work, work / "build-layer.log")
    python = runtime_python(python312, ROOT / ".maas" / "artifact-runtime")
    yield Artifact(python, layer, work)


@pytest.fixture
def files_in_s3(moto, monkeypatch):  # type: ignore[no-untyped-def]
    """The Batch API's files in a bucket of moto's server (what MAAS_FILES_BUCKET names in AWS)."""
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{moto.port}")
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="maas-files-functional")
    monkeypatch.setenv("MAAS_FILES_BUCKET", "maas-files-functional")
