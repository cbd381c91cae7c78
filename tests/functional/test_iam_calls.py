"""Every AWS call each function makes is allowed by its role in template.yaml (issue 21).

Every recorded event in events/ goes through its real handler, configured as in AWS: the pepper
from SSM, the Redis password from Secrets Manager (moto's server), the bus on EventBridge, the
drift to CloudWatch, the Batch API's files to S3; the table is the local DynamoDB. tests/iam
records the calls (botocore's before-parameter-build hook on the function's own session) and
checks each, with the KMS requests AWS makes on the table's and the secret's customer-managed
key, against the role.
The same check runs over every handler call of the session (tests/conftest.py)."""

from __future__ import annotations

import json
import uuid

import boto3
import pytest

from infra.local.template import load_template
from tests.functional.conftest import EVENTS
from tests.iam import recorder
from tests.iam.roles import Resolver, roles
from tests.lambdas import configure, context_for, handler_for

NO_AWS_CALLS = {"console"}  # static files only


@pytest.fixture
def as_in_aws(seeded, own_redis, moto, inference_url, monkeypatch):  # type: ignore[no-untyped-def]  # noqa: F811
    endpoint = f"http://127.0.0.1:{moto.port}"
    for service in ("SSM", "SECRETS_MANAGER", "EVENTBRIDGE", "CLOUDWATCH", "LAMBDA", "S3"):
        monkeypatch.setenv(f"AWS_ENDPOINT_URL_{service}", endpoint)
    suffix = uuid.uuid4().hex[:8]
    ssm = boto3.client("ssm", endpoint_url=endpoint)
    ssm.put_parameter(Name=f"/maas/iam-{suffix}/key-pepper", Value=seeded.pepper.decode(), Type="SecureString")
    password = uuid.uuid4().hex
    secret = boto3.client("secretsmanager", endpoint_url=endpoint).create_secret(
        Name=f"maas-iam-{suffix}", SecretString=password)["ARN"]
    import redis

    redis.Redis(port=own_redis.port).config_set("requirepass", password)
    bus = f"maas-iam-{suffix}"
    boto3.client("events", endpoint_url=endpoint).create_event_bus(Name=bus)
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=f"maas-iam-{suffix}-files")
    configure(monkeypatch, seeded.settings.model_copy(update={
        "key_pepper": None, "key_pepper_param": f"/maas/iam-{suffix}/key-pepper",
        "redis_url": f"redis://127.0.0.1:{own_redis.port}/0", "redis_password_secret_arn": secret,
        "inference_url": inference_url, "event_bus_name": bus, "webhook_allow_local_http": True,
        "flush_worker_function": f"maas-iam-{suffix}-flusher:live", "files_bucket": f"maas-iam-{suffix}-files"}))
    return seeded


def test_every_call_of_every_function_is_allowed_by_its_role(as_in_aws):
    # GIVEN every function configured as in AWS; WHEN each of its recorded events reaches it
    start = len(recorder.CALLS)
    failures = {}
    for path in EVENTS:
        function = path.parent.name
        try:
            handler_for(function)(json.loads(path.read_text()), context_for(function))
        except Exception as error:  # noqa: BLE001 - a failure here is reported below, the calls still count
            failures[f"{function}/{path.stem}"] = repr(error)[:200]
    calls = recorder.CALLS[start:]
    # THEN each function made its calls (none failed before reaching AWS) ...
    silent = {name for name, role in roles().items() if role.code_dir not in NO_AWS_CALLS} - {
        c.function for c in calls}
    assert not failures and not silent, (failures, silent)
    assert {(c.service, c.operation) for c in calls} >= {
        ("ssm", "GetParameter"), ("secretsmanager", "GetSecretValue"), ("events", "PutEvents"),
        ("cloudwatch", "PutMetricData"), ("dynamodb", "TransactWriteItems")}
    # ... AND its role allows every one of them
    problems = recorder.denied(calls, roles(), Resolver(load_template()))
    assert problems == [], "\n".join(["AWS requests no statement of the function's role allows:", *problems])
