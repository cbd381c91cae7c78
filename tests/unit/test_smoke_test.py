"""infra/smoke_test.py, the first deploy's smoke test: its arguments, how it finds the stack's
outputs, and its AWS steps against the services' own request/response shapes (botocore's
Stubber). Its HTTP steps run against the local stack in tests/e2e/test_smoke_script.py; the
whole script can only run against a deployed stack."""

from __future__ import annotations

import datetime
import io
import json
from pathlib import Path

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from infra.smoke_test import (
    StepFailed,
    Targets,
    parse_args,
    read_admin_key,
    resolve_targets,
    step_alarm,
    step_provider,
    step_reconcile,
)

KEY = "maas_sk_test_not_a_real_key"


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "admin-key"
    path.write_text(KEY + "\n")
    path.chmod(0o600)
    return path


def client(service: str):  # type: ignore[no-untyped-def]
    return boto3.session.Session(region_name="us-east-1", aws_access_key_id="testing",
                                 aws_secret_access_key="testing").client(service)


TARGETS = Targets(api_url="https://abc.execute-api.us-east-1.amazonaws.com/dev/", stage="dev",
                  alarm_name="maas-gateway-dev-admission-degraded",
                  alarm_topic_arn="arn:aws:sns:us-east-1:123456789012:maas-gateway-dev-alarms",
                  endpoint_name="maas-embeddings-dev", reconcile_function="maas-gateway-dev-Reconcile-X")


# ------------------------------------------------------------------------ arguments


def test_stack_name_and_key_file_are_enough(key_file):
    args = parse_args(["--stack-name", "maas-gateway-dev", "--admin-key-file", str(key_file)])
    assert (args.stack_name, args.api_url, args.skip, args.allow_cpu) == ("maas-gateway-dev", None, [], False)
    assert read_admin_key(args.admin_key_file) == KEY  # the trailing newline bootstrap writes is dropped


@pytest.mark.parametrize("argv, message", [
    ([], "the following arguments are required: --admin-key-file"),
    (["--admin-key-file", "{key}"], "give --stack-name"),
    (["--api-url", "https://x.example/", "--admin-key-file", "{key}"], "without --stack-name, skip reconcile"),
    (["--api-url", "https://x.example/", "--admin-key-file", "{key}", "--skip", "reconcile", "--skip", "provider"],
     "give --alarm-name or skip alarm"),
    (["--api-url", "http://x.example/", "--admin-key-file", "{key}", "--skip", "reconcile", "--skip", "provider",
      "--skip", "alarm"], "--api-url must be https://"),
    (["--stack-name", "s", "--admin-key-file", "/nonexistent/key"], "does not exist"),
    (["--stack-name", "s", "--admin-key-file", "{key}", "--skip", "everything"], "invalid choice"),
])
def test_bad_arguments_say_what_is_wrong(key_file, capsys, argv, message):
    with pytest.raises(SystemExit) as done:
        parse_args([a.replace("{key}", str(key_file)) for a in argv])
    assert done.value.code == 2
    assert message in capsys.readouterr().err


def test_a_key_file_others_can_read_is_refused(key_file, capsys):
    key_file.chmod(0o644)
    with pytest.raises(SystemExit):
        parse_args(["--stack-name", "s", "--admin-key-file", str(key_file)])
    assert "chmod 600" in capsys.readouterr().err


def test_http_steps_alone_need_no_stack(key_file):
    args = parse_args(["--api-url", "https://api.example.com", "--admin-key-file", str(key_file),
                       "--skip", "reconcile", "--skip", "provider", "--alarm-name", "my-alarm"])
    targets = resolve_targets(args, cloudformation=None)
    assert targets.api_url == "https://api.example.com/"
    assert targets.alarm_name == "my-alarm" and targets.reconcile_function is None


def test_empty_or_spaced_key_file_is_refused(tmp_path):
    path = tmp_path / "k"
    path.write_text("two words\n")
    with pytest.raises(SystemExit):
        read_admin_key(path)


def describe_stacks_reply(outputs: dict[str, str], stage: str = "prod") -> dict:
    return {"Stacks": [{
        "StackName": "maas-gateway-prod", "CreationTime": datetime.datetime(2026, 11, 29),
        "StackStatus": "CREATE_COMPLETE",
        "Parameters": [{"ParameterKey": "Stage", "ParameterValue": stage}],
        "Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in outputs.items()]}]}


def test_targets_come_from_the_stack_outputs(key_file):
    cloudformation = client("cloudformation")
    outputs = {"ApiUrl": "https://abc.execute-api.us-east-1.amazonaws.com/prod/",
               "AlarmTopicArn": TARGETS.alarm_topic_arn, "InferenceEndpointName": "maas-embeddings-prod",
               "ReconcileFunctionName": "maas-gateway-prod-ReconcileFunction-1"}
    with Stubber(cloudformation) as stub:
        stub.add_response("describe_stacks", describe_stacks_reply(outputs),
                          expected_params={"StackName": "maas-gateway-prod"})
        args = parse_args(["--stack-name", "maas-gateway-prod", "--admin-key-file", str(key_file)])
        targets = resolve_targets(args, cloudformation)
    assert targets == Targets(api_url=outputs["ApiUrl"], stage="prod",
                              alarm_name="maas-gateway-prod-admission-degraded",
                              alarm_topic_arn=TARGETS.alarm_topic_arn, endpoint_name="maas-embeddings-prod",
                              reconcile_function="maas-gateway-prod-ReconcileFunction-1")


def test_the_custom_domain_is_preferred_and_flags_win(key_file):
    cloudformation = client("cloudformation")
    outputs = {"ApiUrl": "https://abc.execute-api.us-east-1.amazonaws.com/prod/",
               "ApiCustomDomainUrl": "https://api.example.com/"}
    with Stubber(cloudformation) as stub:
        stub.add_response("describe_stacks", describe_stacks_reply(outputs))
        stub.add_response("describe_stacks", describe_stacks_reply(outputs))
        args = parse_args(["--stack-name", "s", "--admin-key-file", str(key_file)])
        assert resolve_targets(args, cloudformation).api_url == "https://api.example.com/"
        args = parse_args(["--stack-name", "s", "--admin-key-file", str(key_file), "--alarm-name", "a",
                           "--api-url", "https://other.example.com"])
        targets = resolve_targets(args, cloudformation)
    assert (targets.api_url, targets.alarm_name) == ("https://other.example.com/", "a")


# ------------------------------------------------------------------------ AWS steps


def test_reconcile_step_reports_the_months(key_file):
    lambda_client = client("lambda")
    payload = json.dumps({"months": [{"month": "2026-11", "tenants": 3, "cells": 9, "drift_cells": 0,
                                      "drift_tokens": 0}]}).encode()
    with Stubber(lambda_client) as stub:
        stub.add_response("invoke", {"StatusCode": 200, "Payload": StreamingBody(io.BytesIO(payload), len(payload))},
                          expected_params={"FunctionName": TARGETS.reconcile_function,
                                           "InvocationType": "RequestResponse"})
        assert step_reconcile(TARGETS, lambda_client) == "reconciled (2026-11: 0 drifting cell(s))"


def alarm_history(summary: str) -> dict:
    return {"AlarmHistoryItems": [{"AlarmName": TARGETS.alarm_name, "HistoryItemType": "Action",
                                   "Timestamp": datetime.datetime(2026, 11, 29), "HistorySummary": summary}]}


def test_alarm_step_needs_cloudwatch_to_have_published(key_file):
    cloudwatch, sns = client("cloudwatch"), client("sns")
    with Stubber(cloudwatch) as cw, Stubber(sns) as topic:
        cw.add_response("set_alarm_state", {}, expected_params={
            "AlarmName": TARGETS.alarm_name, "StateValue": "ALARM",
            "StateReason": "maas smoke test: a test notification, not an incident"})
        cw.add_response("describe_alarm_history", {"AlarmHistoryItems": []})  # not yet
        cw.add_response("describe_alarm_history", alarm_history(
            f"Successfully executed action {TARGETS.alarm_topic_arn}"))
        topic.add_response("list_subscriptions_by_topic", {"Subscriptions": [
            {"SubscriptionArn": "PendingConfirmation", "Protocol": "email", "Endpoint": "oncall@example.com",
             "TopicArn": TARGETS.alarm_topic_arn, "Owner": "123456789012"}]})
        result = step_alarm(TARGETS, cloudwatch, sns, sleep=lambda s: None)
    assert result == f"{TARGETS.alarm_name} published to the alarm topic; still to confirm: oncall@example.com"


def test_alarm_step_fails_when_the_topic_refuses_cloudwatch():
    cloudwatch = client("cloudwatch")
    with Stubber(cloudwatch) as cw:
        cw.add_response("set_alarm_state", {})
        cw.add_response("describe_alarm_history", alarm_history(
            f"Failed to execute action {TARGETS.alarm_topic_arn}. Received error: KMS.AccessDeniedException"))
        with pytest.raises(StepFailed, match="the key policy"):
            step_alarm(TARGETS, cloudwatch, None, sleep=lambda s: None)


def provider_stubs(minimum: float | None, log_line: str = "") -> tuple:
    cloudwatch, logs = client("cloudwatch"), client("logs")
    cw, lg = Stubber(cloudwatch), Stubber(logs)
    points = [] if minimum is None else [{"Timestamp": datetime.datetime(2026, 11, 29), "Minimum": minimum,
                                          "SampleCount": 15.0}]
    cw.add_response("get_metric_statistics", {"Datapoints": points})
    events = [{"message": log_line, "timestamp": 1}] if log_line else []
    lg.add_response("filter_log_events", {"events": events})
    return cloudwatch, logs, cw, lg


def test_provider_step_passes_on_gpu_and_quotes_the_log():
    cloudwatch, logs, cw, lg = provider_stubs(1.0, '{"status": "ok", "provider": "CUDAExecutionProvider"}')
    with cw, lg:
        result = step_provider(TARGETS, cloudwatch, logs, allow_cpu=False)
    assert result.startswith("GPU on every reporting instance; log:") and "CUDAExecutionProvider" in result


@pytest.mark.parametrize("minimum, allow_cpu, failure", [
    (0.0, False, "runs the model on the CPU"),
    (None, False, "no instance reports its provider"),
    (None, True, "no instance reports its provider"),
])
def test_provider_step_fails_on_cpu_or_silence(minimum, allow_cpu, failure):
    cloudwatch, logs, cw, lg = provider_stubs(minimum)
    with cw, lg, pytest.raises(StepFailed, match=failure):
        step_provider(TARGETS, cloudwatch, logs, allow_cpu=allow_cpu)


def test_provider_step_accepts_cpu_when_told():
    cloudwatch, logs, cw, lg = provider_stubs(0.0)
    with cw, lg:
        assert step_provider(TARGETS, cloudwatch, logs, allow_cpu=True).startswith("CPU")
