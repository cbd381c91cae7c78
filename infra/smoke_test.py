"""The first deploy's smoke test: is the deployed stack answering, metering, alarming and on
its GPU? Run it from an operator's machine once `sam deploy` has finished (docs/OPERATIONS.md,
First deploy):

    python -m infra.smoke_test --stack-name maas-gateway-dev --admin-key-file ~/.config/maas/dev-admin-key

1. health: ``GET /health`` answers 200 ``{"status": "ok"}`` (every part reachable).
2. one metered request: a throw-away tenant and key (billing API, admin key), one
   ``POST /v1/embeddings``, and the request in ``GET /v1/usage`` within 90 s (reports promise
   60 s); the key is revoked and the tenant suspended afterwards.
3. the daily reconcile, once (so the drift alarms have their first measurement).
4. one alarm test notification: ``set-alarm-state`` to ALARM on an alarm outside the
   rollback set, then the alarm history must show CloudWatch published to the topic (this
   is what the topic's KMS key policy must allow); subscriptions still pending confirmation
   are listed, since nothing reaches them until someone confirms.
5. the active provider: the container's ``InferenceGpuActive`` metric (1 on every instance
   = GPU) and its last "provider" log line (what /ping reports).

Needs AWS credentials (CloudFormation, CloudWatch, CloudWatch Logs, Lambda, SNS) and the
bootstrap admin key. Prints PASS/FAIL per step; exit 1 if any step failed. Standard library
and boto3 only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

USAGE_WAIT_S = 90  # reports promise 60 s in AWS
ALARM_WAIT_S = 120
TEST_ALARM = "admission-degraded"  # period 60 s, back to OK within a minute, not a rollback alarm


@dataclass(frozen=True)
class Targets:
    api_url: str
    stage: str
    alarm_name: str
    alarm_topic_arn: str | None
    endpoint_name: str | None
    reconcile_function: str | None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m infra.smoke_test",
                                     description="first-deploy smoke test of a maas-gateway stack")
    parser.add_argument("--stack-name", help="read the API URL, topic, endpoint and functions from its outputs")
    parser.add_argument("--region", help="default: the AWS configuration's")
    parser.add_argument("--admin-key-file", type=Path, required=True,
                        help="file holding the bootstrap admin key (maas admin bootstrap --key-file)")
    parser.add_argument("--api-url", help="base URL of the API (instead of the stack's ApiUrl output)")
    parser.add_argument("--alarm-name", help=f"alarm to set to ALARM (default maas-gateway-<stage>-{TEST_ALARM})")
    parser.add_argument("--skip", action="append", default=[],
                        choices=["health", "metered", "reconcile", "alarm", "provider"],
                        help="leave a step out (repeatable)")
    parser.add_argument("--allow-cpu", action="store_true", help="a CPU provider passes (CPU-only endpoints)")
    args = parser.parse_args(argv)
    if not args.stack_name and not args.api_url:
        parser.error("give --stack-name (or --api-url for the HTTP steps alone)")
    if not args.stack_name:
        needs_stack = {"reconcile", "provider"} - set(args.skip)
        if needs_stack or ("alarm" not in args.skip and not args.alarm_name):
            parser.error("without --stack-name, skip reconcile and provider (and give --alarm-name or skip alarm)")
    if not args.admin_key_file.is_file():
        parser.error(f"--admin-key-file {args.admin_key_file} does not exist")
    if args.admin_key_file.stat().st_mode & 0o077:
        parser.error(f"--admin-key-file {args.admin_key_file} is readable by others: chmod 600 it")
    if args.api_url and not args.api_url.startswith("https://"):
        parser.error("--api-url must be https://")
    return args


def read_admin_key(path: Path) -> str:
    key = path.read_text().strip()
    if not key or any(c.isspace() for c in key):
        raise SystemExit(f"{path}: not an API key")
    return key


def stack_outputs(cloudformation: Any, stack_name: str) -> tuple[dict[str, str], dict[str, str]]:
    (stack,) = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    parameters = {p["ParameterKey"]: p.get("ParameterValue", "") for p in stack.get("Parameters", [])}
    return outputs, parameters


def resolve_targets(args: argparse.Namespace, cloudformation: Any | None) -> Targets:
    outputs: dict[str, str] = {}
    parameters: dict[str, str] = {}
    if args.stack_name:
        assert cloudformation is not None
        outputs, parameters = stack_outputs(cloudformation, args.stack_name)
    api_url = args.api_url or outputs.get("ApiCustomDomainUrl") or outputs.get("ApiUrl")
    if not api_url:
        raise SystemExit(f"{args.stack_name}: no ApiUrl output (is the deploy finished?)")
    stage = parameters.get("Stage", "dev")
    return Targets(api_url=api_url.rstrip("/") + "/", stage=stage,
                   alarm_name=args.alarm_name or f"maas-gateway-{stage}-{TEST_ALARM}",
                   alarm_topic_arn=outputs.get("AlarmTopicArn"), endpoint_name=outputs.get("InferenceEndpointName"),
                   reconcile_function=outputs.get("ReconcileFunctionName"))


# -- HTTP --------------------------------------------------------------------------------------
Http = Callable[..., tuple[int, dict[str, str], Any]]


def http(method: str, url: str, *, key: str | None = None, body: dict | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {}), **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, raw, got = response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        status, raw, got = error.code, error.read(), dict(error.headers)
    try:
        payload: Any = json.loads(raw) if raw else None
    except ValueError:
        payload = raw.decode(errors="replace")
    return status, got, payload


# -- the steps ---------------------------------------------------------------------------------
class StepFailed(Exception):
    pass


def step_health(targets: Targets, call: Http) -> str:
    status, _, body = call("GET", targets.api_url + "health")
    if status != 200 or not isinstance(body, dict) or body.get("status") != "ok":
        raise StepFailed(f"GET /health answered {status}: {body}")
    return "GET /health 200 ok"


def step_metered(targets: Targets, call: Http, admin_key: str, *, wait_s: float = USAGE_WAIT_S,
                 sleep: Callable[[float], None] = time.sleep) -> str:
    api = targets.api_url
    run = uuid.uuid4().hex[:8]
    status, _, tenant = call("POST", api + "billing/tenants", key=admin_key,
                             body={"name": f"smoke-test-{run}", "plan": "starter"},
                             headers={"Idempotency-Key": f"smoke-tenant-{run}"})
    if status != 201:
        raise StepFailed(f"creating the smoke tenant answered {status}: {tenant}")
    status, _, issued = call("POST", api + f"billing/tenants/{tenant['id']}/keys", key=admin_key,
                             body={"name": "smoke test"}, headers={"Idempotency-Key": f"smoke-key-{run}"})
    if status != 201:
        raise StepFailed(f"creating the smoke key answered {status}: {issued}")
    try:
        status, headers, answer = call("POST", api + "v1/embeddings", key=issued["key"],
                                       body={"model": "all-MiniLM-L6-v2", "input": "maas smoke test"})
        if status != 200 or len(answer["data"][0]["embedding"]) != 384:
            raise StepFailed(f"POST /v1/embeddings answered {status}: {str(answer)[:300]}")
        tokens = answer["usage"]["prompt_tokens"]
        if not any(h.lower() == "ratelimit" for h in headers):
            raise StepFailed("POST /v1/embeddings answered without a RateLimit header")
        today = datetime.now(UTC).strftime("%Y-%m-%d")
        deadline = time.monotonic() + wait_s
        while True:
            status, _, usage = call("GET", api + f"v1/usage?start={today}&end={today}", key=issued["key"])
            rows = usage.get("data", []) if status == 200 and isinstance(usage, dict) else []
            if sum(int(r.get("requests", 0)) for r in rows) >= 1:
                return f"1 request of {tokens} token(s) metered; in /v1/usage within {wait_s:.0f} s"
            if time.monotonic() >= deadline:
                raise StepFailed(f"the request was not in /v1/usage after {wait_s:.0f} s (flusher lag?)")
            sleep(5)
    finally:  # leave nothing usable behind
        call("DELETE", api + f"billing/keys/{issued['id']}", key=admin_key)
        call("PATCH", api + f"billing/tenants/{tenant['id']}", key=admin_key, body={"status": "suspended"})


def step_reconcile(targets: Targets, lambda_client: Any) -> str:
    if not targets.reconcile_function:
        raise StepFailed("the stack has no ReconcileFunctionName output")
    reply = lambda_client.invoke(FunctionName=targets.reconcile_function, InvocationType="RequestResponse")
    payload = json.loads(reply["Payload"].read() or b"null")
    if reply.get("FunctionError") or not isinstance(payload, dict):
        raise StepFailed(f"{targets.reconcile_function} failed: {payload}")
    months = ", ".join(f"{m['month']}: {m['drift_cells']} drifting cell(s)" for m in payload.get("months", []))
    return f"reconciled ({months})"


def step_alarm(targets: Targets, cloudwatch: Any, sns: Any | None, *, wait_s: float = ALARM_WAIT_S,
               sleep: Callable[[float], None] = time.sleep) -> str:
    started = datetime.now(UTC) - timedelta(seconds=5)
    cloudwatch.set_alarm_state(AlarmName=targets.alarm_name, StateValue="ALARM",
                               StateReason="maas smoke test: a test notification, not an incident")
    deadline = time.monotonic() + wait_s
    while True:
        history = cloudwatch.describe_alarm_history(AlarmName=targets.alarm_name, HistoryItemType="Action",
                                                    StartDate=started, ScanBy="TimestampDescending")
        summaries = [item["HistorySummary"] for item in history.get("AlarmHistoryItems", [])]
        if any(s.startswith("Failed to execute action") for s in summaries):
            raise StepFailed(f"CloudWatch could not publish to the topic: {summaries[0]} (the key policy?)")
        if any(s.startswith("Successfully executed action") for s in summaries):
            break
        if time.monotonic() >= deadline:
            raise StepFailed(f"no alarm action recorded for {targets.alarm_name} after {wait_s:.0f} s")
        sleep(5)
    pending = []
    if sns is not None and targets.alarm_topic_arn:
        subscriptions = sns.list_subscriptions_by_topic(TopicArn=targets.alarm_topic_arn)["Subscriptions"]
        pending = [s["Endpoint"] for s in subscriptions if s["SubscriptionArn"] == "PendingConfirmation"]
        if not subscriptions:
            raise StepFailed("the alarm topic has no subscription: nobody receives alarms (AlarmEmail)")
    note = f"; still to confirm: {', '.join(pending)}" if pending else ""
    return f"{targets.alarm_name} published to the alarm topic{note}"


def step_provider(targets: Targets, cloudwatch: Any, logs: Any, *, allow_cpu: bool) -> str:
    now = datetime.now(UTC)
    stats = cloudwatch.get_metric_statistics(
        Namespace="MaasGateway", MetricName="InferenceGpuActive",
        Dimensions=[{"Name": "service", "Value": "maas-inference"}], StartTime=now - timedelta(minutes=15),
        EndTime=now, Period=900, Statistics=["Minimum", "SampleCount"])
    points = stats.get("Datapoints", [])
    line = ""
    if targets.endpoint_name:
        events = logs.filter_log_events(logGroupName=f"/aws/sagemaker/Endpoints/{targets.endpoint_name}",
                                        filterPattern='"provider"', startTime=int((now.timestamp() - 3600) * 1000))
        messages = [e["message"].strip() for e in events.get("events", [])]
        line = f"; log: {messages[-1][:160]}" if messages else ""
    if not points:
        raise StepFailed(f"no InferenceGpuActive in the last 15 minutes: no instance reports its provider{line}")
    on_gpu = min(p["Minimum"] for p in points) >= 1
    if not on_gpu and not allow_cpu:
        raise StepFailed(f"an instance runs the model on the CPU (InferenceGpuActive = 0){line}")
    return f"{'GPU' if on_gpu else 'CPU'} on every reporting instance{line}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import boto3

    session = boto3.session.Session(region_name=args.region)
    targets = resolve_targets(args, session.client("cloudformation") if args.stack_name else None)
    admin_key = read_admin_key(args.admin_key_file)
    cloudwatch = session.client("cloudwatch")
    steps: list[tuple[str, Callable[[], str]]] = [
        ("health", lambda: step_health(targets, http)),
        ("metered", lambda: step_metered(targets, http, admin_key)),
        ("reconcile", lambda: step_reconcile(targets, session.client("lambda"))),
        ("alarm", lambda: step_alarm(targets, cloudwatch, session.client("sns"))),
        ("provider", lambda: step_provider(targets, cloudwatch, session.client("logs"), allow_cpu=args.allow_cpu)),
    ]
    print(f"smoke test of {targets.api_url} (stage {targets.stage})")
    failed = 0
    for name, step in steps:
        if name in args.skip:
            print(f"SKIP  {name}")
            continue
        try:
            print(f"PASS  {name}: {step()}")
        except Exception as error:  # every step is reported, whatever failed
            failed += 1
            print(f"FAIL  {name}: {error if isinstance(error, StepFailed) else repr(error)}")
    print(f"smoke test: {failed} step(s) failed")
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("AWS_RETRY_MODE", "standard")
    sys.exit(main())
