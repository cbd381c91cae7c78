"""template.yaml, samconfig.toml and env.json.example: lint-clean, literal where the local stack
reads them, and routed exactly as the contract (docs: /work/shared/CONTRACT.md §3, §5, §6) says."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from infra.local.apigw import load_template, read_functions, read_routes
from tests.routes import handler_routes

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = ROOT / "template.yaml"

# Every route of the public contract, and the function that serves it.
CONTRACT_ROUTES: dict[tuple[str, str], str] = {
    ("POST", "/v1/embeddings"): "InvokeFunction",
    ("GET", "/v1/models"): "InvokeFunction",
    ("GET", "/v1/usage"): "InvokeFunction",
    ("GET", "/health"): "InvokeFunction",
    ("GET", "/billing/plans"): "BillingFunction",
    ("GET", "/billing/tenants"): "BillingFunction",
    ("POST", "/billing/tenants"): "BillingFunction",
    ("GET", "/billing/tenants/{tenant_id}"): "BillingFunction",
    ("PATCH", "/billing/tenants/{tenant_id}"): "BillingFunction",
    ("GET", "/billing/tenants/{tenant_id}/keys"): "BillingFunction",
    ("POST", "/billing/tenants/{tenant_id}/keys"): "BillingFunction",
    ("DELETE", "/billing/keys/{key_id}"): "BillingFunction",
    ("POST", "/billing/keys/{key_id}/rotate"): "BillingFunction",
    ("GET", "/billing/audit"): "BillingFunction",
    ("POST", "/billing/webhooks"): "BillingFunction",
    ("GET", "/billing/webhooks"): "BillingFunction",
    ("DELETE", "/billing/webhooks/{webhook_id}"): "BillingFunction",
    ("GET", "/billing/webhooks/{webhook_id}/deliveries"): "BillingFunction",
    ("GET", "/billing/events"): "BillingFunction",
    ("GET", "/billing/usage"): "ReportsFunction",
    ("GET", "/billing/usage/events"): "ReportsFunction",
    ("GET", "/billing/invoices"): "ReportsFunction",
}
FUNCTION_DIRS = {
    "InvokeFunction": "invoke",
    "BillingFunction": "billing",
    "ReportsFunction": "reports",
    "FlusherFunction": "flusher",
    "DeliveryFunction": "delivery",
}
# What the gateway code reads (gateway/config.py, Powertools), set for every function in AWS.
CODE_ENV = {
    "MAAS_TABLE_NAME",
    "MAAS_REDIS_URL",
    "MAAS_REDIS_CLUSTER",
    "MAAS_REDIS_USERNAME",
    "MAAS_REDIS_PASSWORD_SECRET_ARN",
    "MAAS_SAGEMAKER_ENDPOINT",
    "MAAS_KEY_PEPPER_PARAM",
    "MAAS_STAGE",
    "POWERTOOLS_SERVICE_NAME",
    "POWERTOOLS_METRICS_NAMESPACE",
    "POWERTOOLS_LOG_LEVEL",
}
# cfn-lint findings accepted on purpose. Each is ignored in the template's own Metadata (so
# `sam validate --lint` agrees) and explained there; this list keeps that set exact.
ACCEPTED_LINT_IGNORES = {
    # Parameter-default resolution of !If [CreateVpc, new subnets, PrivateSubnetIds]: the
    # "existing VPC" branch never runs with the empty default (Condition + Rules forbid it).
    "W1030",
}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE_PATH)


def resources_of(template: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == type_}


def contains_intrinsic(value: Any) -> bool:
    if isinstance(value, dict):
        return any(k == "Ref" or k.startswith("Fn::") or contains_intrinsic(v) for k, v in value.items())
    if isinstance(value, list):
        return any(contains_intrinsic(v) for v in value)
    return False


# ------------------------------------------------------------------------ lint


def test_cfn_lint_reports_nothing():
    # GIVEN cfn-lint (the `dev` extra) WHEN it lints the template with its default rules
    # (errors and warnings; the SAM transform runs first) THEN it finds nothing.
    from cfnlint.api import ManualArgs, lint_file

    findings = lint_file(TEMPLATE_PATH, config=ManualArgs())
    assert [f"{m.rule.id} {m}" for m in findings] == []


# Serverless rules (cfn-lint-serverless) that do not fit this stack, each with its reason.
ACCEPTED_SERVERLESS_FINDINGS = {
    # Every function logs to its own group with a retention (InvokeLogGroup ... via
    # LoggingConfig.LogGroup); the rule only looks for groups named /aws/lambda/<function>.
    "WS1004",
    # The flusher's schedule: a failed run leaves its entries pending in Redis and the next
    # minute's run claims them back, so a dead-letter queue would hold nothing to act on.
    # The same for the delivery function's bus rule and schedules: an event whose invocation
    # failed is still in the outbox or the delivery log, and the next minute's pass takes it.
    "ES1007",
    "ES4000",
    # The delivery function's stream mapping: a batch dropped after its retries leaves its
    # events in the outbox, which the every-minute pass publishes; nothing to dead-letter.
    "ES1001",
    # An e-mail subscription of the alarm topic: SNS retries e-mail delivery itself.
    "ES7000",
}


def test_cfn_lint_serverless_rules_report_only_accepted_findings():
    # GIVEN the serverless rules (the `dev` extra's cfn-lint-serverless) on top of the defaults
    from cfnlint.api import ManualArgs, lint_file

    findings = lint_file(TEMPLATE_PATH, config=ManualArgs(append_rules=["cfn_lint_serverless.rules"]))
    # THEN nothing but the findings accepted above, with their reasons
    assert {m.rule.id for m in findings} <= ACCEPTED_SERVERLESS_FINDINGS, [str(m) for m in findings]


def test_lint_ignores_are_exactly_the_accepted_ones(template):
    ignores = set(template.get("Metadata", {}).get("cfn-lint", {}).get("config", {}).get("ignore_checks", []))
    assert ignores == ACCEPTED_LINT_IGNORES
    for res in template["Resources"].values():
        assert "cfn-lint" not in (res.get("Metadata") or {}), "no per-resource lint ignores"


def _sam() -> str | None:
    return os.environ.get("MAAS_SAM") or shutil.which("sam")


@pytest.mark.skipif(_sam() is None, reason="aws-sam-cli not installed (set MAAS_SAM or put sam on PATH)")
def test_sam_validate_lint():
    # Offline: SAM's own translator plus cfn-lint, as `sam validate` with samconfig's lint = true.
    env = {
        **os.environ,
        "SAM_CLI_TELEMETRY": "0",
        "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    }
    proc = subprocess.run(
        [_sam(), "validate", "--lint", "--template-file", str(TEMPLATE_PATH)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ------------------------------------------------------------------------ structure


def test_every_parameter_has_a_description(template):
    missing = [name for name, p in template["Parameters"].items() if not str(p.get("Description", "")).strip()]
    assert missing == []


def test_table_definition_is_literal_for_the_local_stack(template):
    props = template["Resources"]["MaasTable"]["Properties"]
    for key in ("AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes", "BillingMode"):
        assert not contains_intrinsic(props[key]), key
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert {(a["AttributeName"], a["AttributeType"]) for a in props["AttributeDefinitions"]} == {
        ("pk", "S"),
        ("sk", "S"),
        ("gsi1pk", "S"),
        ("gsi1sk", "S"),
        ("gsi2pk", "S"),
        ("gsi2sk", "S"),
    }
    for gsi, name in zip(props["GlobalSecondaryIndexes"], ("gsi1", "gsi2"), strict=True):
        assert gsi["IndexName"] == name
        assert gsi["KeySchema"] == [
            {"AttributeName": f"{name}pk", "KeyType": "HASH"},
            {"AttributeName": f"{name}sk", "KeyType": "RANGE"},
        ]
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["DeletionProtectionEnabled"] == {"Fn::If": ["IsProd", True, False]}


def test_table_definition_creates_a_table_in_moto(template):
    # The local stack creates the table from these properties; moto must accept them as they are.
    boto3 = pytest.importorskip("boto3")
    moto = pytest.importorskip("moto")
    props = template["Resources"]["MaasTable"]["Properties"]
    with moto.mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(
            TableName="maas-test",
            AttributeDefinitions=props["AttributeDefinitions"],
            KeySchema=props["KeySchema"],
            GlobalSecondaryIndexes=props["GlobalSecondaryIndexes"],
            BillingMode=props["BillingMode"],
        )
        table = client.describe_table(TableName="maas-test")["Table"]
        assert table["GlobalSecondaryIndexes"][0]["IndexName"] == "gsi1"


def test_functions_code_handler_layer(template):
    glob = template["Globals"]["Function"]
    assert glob["Runtime"] == "python3.12"
    assert glob["Architectures"] == ["arm64"]
    assert glob["Tracing"] == "Active"
    assert glob["Layers"] == [{"Ref": "GatewayLayer"}]
    functions = resources_of(template, "AWS::Serverless::Function")
    assert set(functions) == set(FUNCTION_DIRS)
    specs = read_functions(template, ROOT)
    for name, folder in FUNCTION_DIRS.items():
        assert functions[name]["Properties"]["CodeUri"] == f"functions/{folder}/"
        assert specs[name].handler == "app.handler"
    layer = template["Resources"]["GatewayLayer"]
    assert layer["Properties"]["ContentUri"] == "."
    assert layer["Metadata"]["BuildMethod"] == "makefile"


def test_environment_covers_what_the_code_reads(template):
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert CODE_ENV <= set(env)
    assert env["MAAS_TABLE_NAME"] == {"Ref": "MaasTable"}
    assert env["MAAS_REDIS_CLUSTER"] == "true"
    assert env["MAAS_REDIS_URL"]["Fn::Sub"].startswith("rediss://")
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == "MaasGateway"


def test_flusher_runs_every_minute_without_api(template):
    events = template["Resources"]["FlusherFunction"]["Properties"]["Events"]
    assert [e["Type"] for e in events.values()] == ["Schedule"]
    assert next(iter(events.values()))["Properties"]["Schedule"] == "rate(1 minute)"


def test_delivery_function_is_fed_by_the_stream_the_bus_and_schedules(template):
    resources = template["Resources"]
    props = resources["DeliveryFunction"]["Properties"]
    # Outside the VPC (receivers are on the internet; there is no NAT), so the Globals' VPC is removed.
    assert props["VpcConfig"] == {"Ref": "AWS::NoValue"}
    assert props["Environment"]["Variables"]["MAAS_EVENT_BUS_NAME"] == {"Ref": "EventBus"}
    assert resources["MaasTable"]["Properties"]["StreamSpecification"] == {"StreamViewType": "NEW_IMAGE"}
    events = props["Events"]
    stream = events["Stored"]["Properties"]
    assert stream["Stream"] == {"Fn::GetAtt": ["MaasTable", "StreamArn"]}
    (pattern,) = [json.loads(f["Pattern"]) for f in stream["FilterCriteria"]["Filters"]]
    assert pattern == {"dynamodb": {"NewImage": {"gsi2pk": {"S": ["OUTBOX"]}}}}  # only events entering the outbox
    rule = events["Published"]["Properties"]
    assert events["Published"]["Type"] == "EventBridgeRule" and rule["EventBusName"] == {"Ref": "EventBus"}
    assert rule["Pattern"] == {"source": ["maas.gateway"]}  # gateway.adapters.event_bus.SOURCE
    schedules = {name: (e["Properties"]["Schedule"], json.loads(e["Properties"]["Input"]))
                 for name, e in events.items() if e["Type"] == "Schedule"}
    assert schedules == {"Retry": ("rate(1 minute)", {"task": "retry"}), "Sweep": ("rate(1 day)", {"task": "sweep"})}
    assert {"EventBridgePutEventsPolicy": {"EventBusName": {"Ref": "EventBus"}}} in props["Policies"]


def test_policies_are_scoped(template):
    # No wildcard action or resource in what the functions may do.
    for name in FUNCTION_DIRS:
        for policy in template["Resources"][name]["Properties"]["Policies"]:
            for stmt in policy.get("Statement", []) if isinstance(policy, dict) else []:
                assert "*" not in json.dumps(stmt.get("Action")), (name, stmt)
                assert stmt.get("Resource") != "*", (name, stmt)
    invoke = template["Resources"]["InvokeFunction"]["Properties"]["Policies"]
    statements = [s for p in invoke if isinstance(p, dict) for s in p.get("Statement", [])]
    (sagemaker,) = [s for s in statements if s["Action"] == "sagemaker:InvokeEndpoint"]
    assert sagemaker["Resource"] == {"Ref": "InferenceEndpoint"}
    reports = template["Resources"]["ReportsFunction"]["Properties"]["Policies"]
    assert not any("DynamoDBCrudPolicy" in p for p in reports if isinstance(p, dict)), "reports only read"


def test_gateway_responses_use_openai_error_shape(template):
    responses = template["Resources"]["MaasApi"]["Properties"]["GatewayResponses"]
    assert responses["MISSING_AUTHENTICATION_TOKEN"]["StatusCode"] == 404
    assert responses["REQUEST_TOO_LARGE"]["StatusCode"] == 413
    for kind, response in responses.items():
        body = response["ResponseTemplates"]["application/json"]
        # $context.error.messageString is already a quoted JSON string
        rendered = body.replace("$context.error.messageString", '"x"').replace("$context.requestId", "r")
        error = json.loads(rendered)["error"]
        assert set(error) == {"message", "type", "param", "code"}, kind
    unknown = json.loads(responses["MISSING_AUTHENTICATION_TOKEN"]["ResponseTemplates"]["application/json"])
    assert unknown["error"]["code"] == "unknown_route"
    assert unknown["error"]["type"] == "invalid_request_error"


def test_outputs(template):
    assert {"ApiUrl", "TableName", "InferenceEndpointName"} <= set(template["Outputs"])


# ------------------------------------------------------------------------ routes


def template_routes(template) -> dict[tuple[str, str], str]:
    return {(r.method, r.resource): r.function_id for r in read_routes(template)}


def test_every_api_path_is_a_contract_route(template):
    routes = template_routes(template)
    assert set(routes) - set(CONTRACT_ROUTES) == set(), "routes the contract does not have"
    assert set(CONTRACT_ROUTES) - set(routes) == set(), "contract routes the template does not serve"
    assert routes == CONTRACT_ROUTES


def test_every_api_event_uses_the_one_rest_api(template):
    for name, fn in resources_of(template, "AWS::Serverless::Function").items():
        for event in (fn["Properties"].get("Events") or {}).values():
            if event["Type"] == "Api":
                assert event["Properties"]["RestApiId"] == {"Ref": "MaasApi"}, name


@pytest.mark.parametrize("function", ["InvokeFunction", "BillingFunction", "ReportsFunction"])
def test_template_routes_equal_handler_routes(template, function):
    # GIVEN the handler module's resolver WHEN its routes are compared with the template's Api
    # events for that function THEN they are the same set: nothing unreachable, nothing unrouted.
    expected = {key for key, fn in template_routes(template).items() if fn == function}
    assert handler_routes(FUNCTION_DIRS[function]) == expected


# ------------------------------------------------------------------------ samconfig, env.json


def test_samconfig():
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    for env in ("default", "prod"):
        deploy = config[env]["deploy"]["parameters"]
        assert deploy["resolve_s3"] is True
        assert deploy["confirm_changeset"] is True
        assert config[env]["validate"]["parameters"]["lint"] is True
    assert 'Stage="prod"' in config["prod"]["deploy"]["parameters"]["parameter_overrides"]


def test_env_json_example_matches_the_template(template):
    # sam local passes a function only the variables its template declares, so every key of
    # env.json.example must be declared, and every function must have an entry.
    example = json.loads((ROOT / "env.json.example").read_text())
    specs = read_functions(template, ROOT)
    assert set(example) == set(specs)
    for name, variables in example.items():
        declared = set(specs[name].environment)
        assert set(variables) <= declared, (name, set(variables) - declared)
        assert variables["MAAS_REDIS_URL"] == "redis://host.docker.internal:6380/0"
        assert variables["MAAS_DYNAMODB_ENDPOINT"] == "http://host.docker.internal:5100"
        assert variables["MAAS_INFERENCE_URL"] == "http://host.docker.internal:8080"
        assert variables["MAAS_KEY_PEPPER"] == "local-dev-pepper"
        assert variables["MAAS_TABLE_NAME"] == "maas-local"
