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
from infra.local.apigw.proxy import GATEWAY_RESPONSE_HEADERS
from tests.routes import handler_routes

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = ROOT / "template.yaml"

# Every route of the public contract, and the function that serves it.
CONTRACT_ROUTES: dict[tuple[str, str], str] = {
    ("POST", "/v1/embeddings"): "InvokeFunction",
    ("GET", "/v1/models"): "InvokeFunction",
    ("GET", "/v1/usage"): "InvokeFunction",
    ("GET", "/v1/balance"): "InvokeFunction",
    ("GET", "/health"): "InvokeFunction",
    ("GET", "/v1/me"): "InvokeFunction",
    ("GET", "/v1/keys"): "InvokeFunction",
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
    ("PATCH", "/billing/keys/{key_id}"): "BillingFunction",
    ("POST", "/billing/tenants/{tenant_id}/credits"): "BillingFunction",
    ("GET", "/billing/tenants/{tenant_id}/credits"): "BillingFunction",
    ("GET", "/billing/tenants/{tenant_id}/balance"): "BillingFunction",
    ("POST", "/billing/webhooks"): "BillingFunction",
    ("GET", "/billing/webhooks"): "BillingFunction",
    ("DELETE", "/billing/webhooks/{webhook_id}"): "BillingFunction",
    ("GET", "/billing/webhooks/{webhook_id}/deliveries"): "BillingFunction",
    ("GET", "/billing/events"): "BillingFunction",
    ("GET", "/billing/usage"): "ReportsFunction",
    ("GET", "/billing/usage/events"): "ReportsFunction",
    ("GET", "/billing/invoices"): "ReportsFunction",
    ("GET", "/billing/reconcile"): "ReportsFunction",
    # The web console (§9): static files on the API's own origin. /console/ reaches the
    # /console resource too: API Gateway REST routes it there, keeping the slash in `path`.
    ("GET", "/console"): "ConsoleFunction",
    ("GET", "/console/{proxy+}"): "ConsoleFunction",
    ("POST", "/v1/files"): "InvokeFunction",
    ("GET", "/v1/files/{file_id}"): "InvokeFunction",
    ("DELETE", "/v1/files/{file_id}"): "InvokeFunction",
    ("GET", "/v1/files/{file_id}/content"): "InvokeFunction",
    ("POST", "/v1/batches"): "InvokeFunction",
    ("GET", "/v1/batches"): "InvokeFunction",
    ("GET", "/v1/batches/{batch_id}"): "InvokeFunction",
    ("POST", "/v1/batches/{batch_id}/cancel"): "InvokeFunction",
}
FUNCTION_DIRS = {
    "InvokeFunction": "invoke",
    "BillingFunction": "billing",
    "ReportsFunction": "reports",
    "FlusherFunction": "flusher",
    "FlushDispatcherFunction": "flush_dispatcher",
    "ConsoleFunction": "console",
    "ReconcileFunction": "reconcile",
    "DeliveryFunction": "delivery",
    "ProjectorFunction": "projector",
    "BatchWorkerFunction": "batch_worker",
}
# Functions that read none of the gateway's settings (env.json.example leaves them empty).
STATIC_FUNCTIONS = {"ConsoleFunction"}
# What the gateway code reads (gateway/config.py, Powertools), set for every function in AWS.
CODE_ENV = {
    "MAAS_TABLE_NAME",
    "MAAS_REDIS_URL",
    "MAAS_REDIS_CLUSTER",
    "MAAS_REDIS_USERNAME",
    "MAAS_REDIS_PASSWORD_SECRET_ARN",
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
    # The schedules. The flusher's: a failed run leaves its entries pending in Redis and the
    # next minute's run claims them back. The reconcile's: EventBridge and Lambda retry it, and a
    # day without a measurement raises ReconcileNotRunAlarm. The delivery function's bus rule and
    # schedules: an event whose invocation failed is still in the outbox or the delivery log, and
    # the next minute's pass takes it. A dead-letter queue would hold nothing to act on.
    "ES1007",
    "ES4000",
    # StreamFailures is itself the stream mappings' on-failure destination (a batch's
    # coordinates, for an operator): a queue behind it would hold nothing more.
    "ES6000",
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
    assert layer["Metadata"]["BuildMethod"] == "makefile"
    # The console's bundled libraries come from functions/console/Makefile (npm ci), as locally.
    assert template["Resources"]["ConsoleFunction"]["Metadata"]["BuildMethod"] == "makefile"


def test_layer_builds_from_its_own_directory(template):
    # GIVEN the layer's ContentUri WHEN sam build copies and hashes it THEN it is a small
    # directory whose links bring exactly the gateway package and its pyproject (not ".", which
    # made every build copy the virtual environments and the model).
    layer = template["Resources"]["GatewayLayer"]
    content = ROOT / layer["Properties"]["ContentUri"]
    assert content != ROOT and content.is_dir()
    # its own package definition (tests/unit/test_layer_package.py), the gateway linked in
    assert sorted(p.name for p in content.iterdir()) == ["gateway", "pyproject.toml", "requirements.txt"]
    assert (content / "gateway").resolve() == ROOT / "gateway"
    assert (content / "gateway" / "lua" / "admit.lua").exists()
    # The build target lives in the repository's Makefile (ContextPath), which SAM runs there.
    assert (ROOT / layer["Metadata"]["ContextPath"] / "Makefile").read_text().count("build-GatewayLayer:") == 1


def test_environment_covers_what_the_code_reads(template):
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert CODE_ENV <= set(env)
    assert env["MAAS_TABLE_NAME"] == {"Ref": "MaasTable"}
    assert env["MAAS_REDIS_CLUSTER"] == "true"
    assert env["MAAS_REDIS_URL"]["Fn::Sub"].startswith("rediss://")
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == "MaasGateway"


def test_only_the_functions_that_embed_name_the_endpoint_and_none_waits_for_it(template):
    # A !GetAtt in Globals made every function (and so the whole stack, MemoryDB included) wait
    # on the endpoint and roll back with it; the literal name is the endpoint's own.
    assert "MAAS_SAGEMAKER_ENDPOINT" not in template["Globals"]["Function"]["Environment"]["Variables"]
    named = {name for name, r in resources_of(template, "AWS::Serverless::Function").items()
             if "MAAS_SAGEMAKER_ENDPOINT" in r["Properties"].get("Environment", {}).get("Variables", {})}
    assert named == {"InvokeFunction", "BatchWorkerFunction"}
    endpoint = template["Resources"]["InferenceEndpoint"]["Properties"]["EndpointName"]
    for name in named:
        variables = template["Resources"][name]["Properties"]["Environment"]["Variables"]
        assert variables["MAAS_SAGEMAKER_ENDPOINT"] == endpoint == {"Fn::Sub": "maas-embeddings-${Stage}"}


def test_flush_dispatcher_runs_every_minute_and_starts_the_workers(template):
    resources = template["Resources"]
    # The workers have no trigger of their own: the dispatcher invokes their live alias.
    assert "Events" not in resources["FlusherFunction"]["Properties"]
    dispatcher = resources["FlushDispatcherFunction"]["Properties"]
    schedules = {name: (e["Properties"]["Schedule"], json.loads(e["Properties"].get("Input", "{}")))
                 for name, e in dispatcher["Events"].items()}
    assert [e["Type"] for e in dispatcher["Events"].values()] == ["Schedule", "Schedule"]
    assert schedules == {"EveryMinute": ("rate(1 minute)", {}), "Sweep": ("cron(15 3 * * ? *)", {"task": "sweep"})}
    assert dispatcher["Environment"]["Variables"]["MAAS_FLUSH_WORKER_FUNCTION"] == {"Ref": "FlusherFunction.Alias"}
    assert {"LambdaInvokePolicy": {"FunctionName": {"Ref": "FlusherFunction"}}} in dispatcher["Policies"]
    # A worker's minute fits its timeout (functions/flush_dispatcher/app.py WORKER_WINDOW_S = 55).
    assert resources["FlusherFunction"]["Properties"]["Timeout"] > 55 + 10
    # Without a NAT the dispatcher reaches the Lambda API through an endpoint.
    assert resources["LambdaEndpoint"]["Properties"]["ServiceName"] == {
        "Fn::Sub": "com.amazonaws.${AWS::Region}.lambda"}


def test_projector_is_woken_by_projection_marks_and_every_minute(template):
    resources = template["Resources"]
    props = resources["ProjectorFunction"]["Properties"]
    assert "VpcConfig" not in props  # the Globals' VPC: it writes MemoryDB
    events = props["Events"]
    stream = events["Marked"]["Properties"]
    assert events["Marked"]["Type"] == "DynamoDB" and stream["Stream"] == {"Fn::GetAtt": ["MaasTable", "StreamArn"]}
    (pattern,) = [json.loads(f["Pattern"]) for f in stream["FilterCriteria"]["Filters"]]
    # Only the projection marks (gateway/adapters/dynamo/outbox.py): pk OUTBOX, written or rewritten.
    assert pattern == {"eventName": ["INSERT", "MODIFY"], "dynamodb": {"Keys": {"pk": {"S": ["OUTBOX"]}}}}
    assert events["EveryMinute"]["Type"] == "Schedule"
    assert events["EveryMinute"]["Properties"]["Schedule"] == "rate(1 minute)"
    # The webhook dispatcher's stream filter never matches a projection mark (no gsi2pk).
    from gateway.adapters.dynamo.outbox import Outbox

    mark = Outbox(None).mark_write("ten_x", "change")["Put"]["Item"]  # type: ignore[arg-type]
    assert "gsi2pk" not in mark and mark["pk"] == {"S": "OUTBOX"}


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
    # No wildcard action; no wildcard resource except where IAM offers nothing narrower
    # (PutMetricData), and then only with a condition that narrows it.
    for name in FUNCTION_DIRS:
        for policy in template["Resources"][name]["Properties"].get("Policies", []):
            for stmt in policy.get("Statement", []) if isinstance(policy, dict) else []:
                assert "*" not in json.dumps(stmt.get("Action")), (name, stmt)
                if stmt.get("Resource") == "*":
                    assert stmt["Action"] == "cloudwatch:PutMetricData", (name, stmt)
                    assert stmt["Condition"] == {"StringEquals": {"cloudwatch:namespace": "MaasGateway"}}
    invoke = template["Resources"]["InvokeFunction"]["Properties"]["Policies"]
    statements = [s for p in invoke if isinstance(p, dict) for s in p.get("Statement", [])]
    (sagemaker,) = [s for s in statements if s["Action"] == "sagemaker:InvokeEndpoint"]
    assert sagemaker["Resource"] == {"Ref": "InferenceEndpoint"}
    reports = template["Resources"]["ReportsFunction"]["Properties"]["Policies"]
    assert not any("DynamoDBCrudPolicy" in p for p in reports if isinstance(p, dict)), "reports only read"
    # The console serves files: no store, no secret, no endpoint (only the basic execution role).
    assert "Policies" not in template["Resources"]["ConsoleFunction"]["Properties"]


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
        # the same headers as the local gateway's own answers (and as every function's)
        headers = {name: value.strip("'") for name, value in response["ResponseParameters"]["Headers"].items()}
        assert set(GATEWAY_RESPONSE_HEADERS) <= set(headers.items()), kind
    unknown = json.loads(responses["MISSING_AUTHENTICATION_TOKEN"]["ResponseTemplates"]["application/json"])
    assert unknown["error"]["code"] == "unknown_route"
    assert unknown["error"]["type"] == "invalid_request_error"
    # API Gateway's own 5xx (a function timed out, failed or throttled) say when to retry
    for kind in ("INTEGRATION_TIMEOUT", "DEFAULT_5XX"):
        assert responses[kind]["ResponseParameters"]["Headers"]["Retry-After"] == "'1'", kind


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
        if name in STATIC_FUNCTIONS:
            assert variables == {}, name
            continue
        declared = set(specs[name].environment)
        assert set(variables) <= declared, (name, set(variables) - declared)
        assert variables["MAAS_REDIS_URL"] == "redis://host.docker.internal:6380/0"
        assert variables["MAAS_DYNAMODB_ENDPOINT"] == "http://host.docker.internal:5100"
        assert variables["MAAS_INFERENCE_URL"] == "http://host.docker.internal:8080"
        assert variables["MAAS_KEY_PEPPER"] == "local-dev-pepper"
        assert variables["MAAS_TABLE_NAME"] == "maas-local"


# ------------------------------------------------------------------------ intrinsic evaluation


def evaluate(value: Any, refs: dict[str, Any]) -> Any:
    """The few intrinsics the tests below need, as CloudFormation computes them."""
    if isinstance(value, list):
        return [evaluate(v, refs) for v in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"Ref"}:
        return refs[value["Ref"]]
    ((fn, arg),) = value.items()
    if fn == "Fn::Select":
        return evaluate(arg[1], refs)[int(evaluate(arg[0], refs))]
    if fn == "Fn::Split":
        return evaluate(arg[1], refs).split(evaluate(arg[0], refs))
    if fn == "Fn::Join":
        return evaluate(arg[0], refs).join(evaluate(arg[1], refs))
    if fn == "Fn::Sub":
        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
        scope = {**refs, **{k: evaluate(v, refs) for k, v in variables.items()}}
        for name, val in scope.items():
            text = text.replace("${" + name + "}", str(val))
        return text
    raise NotImplementedError(fn)


def param_default(template: dict[str, Any], name: str) -> Any:
    return template["Parameters"][name]["Default"]


# ------------------------------------------------------------------------ deploy blockers


@pytest.mark.parametrize("function, parameter", [("InvokeFunction", "InvokeReservedConcurrency"),
                                                 ("FlusherFunction", "FlusherReservedConcurrency")])
def test_reserved_concurrency_is_a_parameter_that_defaults_to_none(template, function, parameter):
    # A new account's quota is often 10 and Lambda keeps 100 (or all of it) unreserved: any
    # literal reservation would roll the first deploy back.
    condition = f"Has{parameter}"
    assert template["Resources"][function]["Properties"]["ReservedConcurrentExecutions"] == {
        "Fn::If": [condition, {"Ref": parameter}, {"Ref": "AWS::NoValue"}]}
    assert template["Conditions"][condition] == {"Fn::Not": [{"Fn::Equals": [{"Ref": parameter}, 0]}]}
    assert param_default(template, parameter) == 0


def test_no_function_reserves_concurrency_literally(template):
    for name, fn in resources_of(template, "AWS::Serverless::Function").items():
        reserved = fn["Properties"].get("ReservedConcurrentExecutions")
        assert reserved is None or isinstance(reserved, dict), name


def test_default_deploy_reserves_nothing():
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    overrides = config["default"]["deploy"]["parameters"]["parameter_overrides"]
    assert "ReservedConcurrency" not in overrides


AMI_CUDA = {  # what each InferenceAmiVersion's NVIDIA driver supports (SageMaker API reference)
    "al2-ami-sagemaker-inference-gpu-2": (12, 2),
    "al2-ami-sagemaker-inference-gpu-2-1": (12, 2),
    "al2-ami-sagemaker-inference-gpu-3-1": (12, 4),
    "al2023-ami-sagemaker-inference-gpu-4-1": (13, 0),
}


def image_cuda_version() -> tuple[int, int]:
    dockerfile = (ROOT / "inference_image" / "Dockerfile").read_text()
    image = next(line for line in dockerfile.splitlines() if line.startswith("ARG CUDA_IMAGE="))
    major, minor = image.split("nvidia/cuda:", 1)[1].split(".")[:2]
    return int(major), int(minor)


def test_gpu_instances_get_a_driver_new_enough_for_the_image(template):
    # GIVEN the CUDA of the image's base WHEN the endpoint's instances boot THEN their driver
    # supports it natively (the default real-time AMI's driver is older).
    (variant,) = template["Resources"]["InferenceEndpointConfig"]["Properties"]["ProductionVariants"]
    assert variant["InferenceAmiVersion"] == {"Ref": "InferenceAmiVersion"}
    default = param_default(template, "InferenceAmiVersion")
    assert AMI_CUDA[default] >= image_cuda_version()
    assert set(template["Parameters"]["InferenceAmiVersion"]["AllowedValues"]) <= set(AMI_CUDA)


class RecordingEnv(dict):
    """An environment that remembers every name looked up in it."""

    def __init__(self) -> None:
        super().__init__()
        self.read: set[str] = set()

    def get(self, key, default=None):  # type: ignore[no-untyped-def]
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key):  # type: ignore[no-untyped-def]
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key):  # type: ignore[no-untyped-def]
        self.read.add(key)
        return super().__contains__(key)


def container_reads() -> set[str]:
    from inference_image.server.config import Settings as ServerSettings

    env = RecordingEnv()
    ServerSettings.from_env(env)
    return env.read


def test_every_container_variable_is_one_the_server_reads(template):
    env = template["Resources"]["InferenceModel"]["Properties"]["PrimaryContainer"]["Environment"]
    assert "MAAS_INFERENCE_PROVIDERS" not in env  # the old name nobody read
    assert "MAAS_PROVIDERS" in container_reads()
    assert set(env) - container_reads() == set()
    # GPU endpoints insist on a GPU: /ping refuses otherwise, so SageMaker never routes to it
    assert env["MAAS_REQUIRE_GPU"] == {"Ref": "InferenceRequireGpu"}
    assert param_default(template, "InferenceRequireGpu") == "true"
    assert env["MAAS_PROVIDERS"].split(",")[0] in {"tensorrt", "cuda"}
    # one endpoint serves the whole catalogue (docs/ARCHITECTURE.md, Several models)
    from gateway.domain.registry import CATALOGUE

    assert env["MAAS_MODELS"].split(",") == [spec.id for spec in CATALOGUE]


# Variables the functions get that gateway/config.py's Settings does not read, and who does.
READ_ELSEWHERE: dict[str, str] = {}


def test_every_function_variable_is_one_the_gateway_reads(template):
    from gateway.config import PREFIX, Settings

    settings_env = {PREFIX + field.upper() for field in Settings.model_fields}
    for name, spec in read_functions(template, ROOT).items():
        for variable in spec.environment:
            if variable.startswith("POWERTOOLS_"):
                continue  # read by aws-lambda-powertools itself
            if variable in READ_ELSEWHERE:
                assert variable in (ROOT / READ_ELSEWHERE[variable]).read_text(), variable
                continue
            assert variable in settings_env, (name, variable)


def test_memorydb_tls_verifies_the_ca_and_names_the_hostname_mode(template):
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env["MAAS_REDIS_URL"]["Fn::Sub"].startswith("rediss://")
    assert env["MAAS_REDIS_TLS_CHECK_HOSTNAME"] == "false"  # nodes are discovered by IP
    assert template["Resources"]["RedisCluster"]["Properties"]["TLSEnabled"] is True


# ------------------------------------------------------------------------ alarms reach a person


def test_alarm_topic_uses_a_key_cloudwatch_may_use(template):
    topic = template["Resources"]["AlarmTopic"]["Properties"]
    assert topic["KmsMasterKeyId"] == {"Ref": "AlarmTopicKey"}  # not alias/aws/sns
    key = template["Resources"]["AlarmTopicKey"]
    assert key["Type"] == "AWS::KMS::Key" and key["Properties"]["EnableKeyRotation"] is True
    statements = key["Properties"]["KeyPolicy"]["Statement"]
    (cloudwatch,) = [s for s in statements if s["Principal"].get("Service") == "cloudwatch.amazonaws.com"]
    assert cloudwatch["Effect"] == "Allow"
    assert set(cloudwatch["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}


def test_alarm_subscriptions_email_and_https(template):
    email = template["Resources"]["AlarmEmailSubscription"]
    https = template["Resources"]["AlarmHttpsSubscription"]
    assert (email["Condition"], email["Properties"]["Protocol"]) == ("HasAlarmEmail", "email")
    assert (https["Condition"], https["Properties"]["Protocol"]) == ("HasAlarmHttpsEndpoint", "https")
    assert https["Properties"]["Endpoint"] == {"Ref": "AlarmHttpsEndpoint"}


def alarm_metrics(alarm: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(namespace, metric, dimensions) of every metric an alarm reads."""
    props = alarm["Properties"]
    if "MetricName" in props:
        return [(props["Namespace"], props["MetricName"], {d["Name"]: d["Value"] for d in props["Dimensions"]})]
    found = []
    for query in props["Metrics"]:
        if "MetricStat" in query:
            metric = query["MetricStat"]["Metric"]
            found.append((metric["Namespace"], metric["MetricName"],
                          {d["Name"]: d["Value"] for d in metric["Dimensions"]}))
        elif str(query.get("Expression", "")).startswith("SELECT") or "Fn::Sub" in query.get("Expression", {}):
            expression = query["Expression"]["Fn::Sub"] if isinstance(query["Expression"], dict) else \
                query["Expression"]
            metric = expression.split("SELECT ", 1)[1].split("(", 1)[1].split(")", 1)[0]
            namespace = expression.split('FROM "', 1)[1].split('"', 1)[0]
            found.append((namespace, metric, {}))
    return found


def test_every_alarm_notifies_the_topic(template):
    alarms = resources_of(template, "AWS::CloudWatch::Alarm")
    assert len(alarms) >= 15
    for name, alarm in alarms.items():
        props = alarm["Properties"]
        assert props["AlarmActions"] == [{"Ref": "AlarmTopic"}], name
        assert props["OKActions"] == [{"Ref": "AlarmTopic"}], name


# (namespace, metric) -> what the issue asks an alarm for; every one must be watched.
REQUIRED_ALARMS = {
    ("AWS/SageMaker", "Invocation5XXErrors"): "SageMaker 5xx",
    ("AWS/SageMaker", "ModelLatency"): "model latency",
    ("MaasGateway", "InferenceGpuActive"): "CPU fallback",
    ("AWS/MemoryDB", "DatabaseMemoryUsagePercentage"): "MemoryDB memory",
    ("AWS/MemoryDB", "EngineCPUUtilization"): "MemoryDB CPU",
    ("AWS/DynamoDB", "ReadThrottleEvents"): "DynamoDB throttles",
    ("AWS/DynamoDB", "WriteThrottleEvents"): "DynamoDB throttles",
    ("MaasGateway", "FlusherErrors"): "flusher errors",
    ("MaasGateway", "FlusherLagSeconds"): "flusher lag",
    ("MaasGateway", "AdmissionDegraded"): "admission without Redis",
    ("MaasGateway", "WebhookDeliveryFailures"): "webhook delivery failures",
    ("MaasGateway", "LedgerDrift"): "ledger drift",
    ("AWS/ApiGateway", "5XXError"): "API 5xx rate",
}
# Custom metrics and where they are emitted (the names the alarms match must be the code's).
CUSTOM_METRIC_SOURCES = {
    "FlusherErrors": "functions/flusher/app.py",
    "FlusherLagSeconds": "functions/flusher/app.py",
    "AdmissionDegraded": "gateway/services/embeddings.py",
    "LedgerDrift": "gateway/services/reconcile.py",
    "InferenceGpuActive": "inference_image/server",  # the container's EMF line
    "WebhookDeliveryFailures": "functions/delivery/app.py",
    "ProjectionsPending": "functions/projector/app.py",
}


def test_the_alarms_the_issue_asks_for_exist(template):
    watched = {(ns, metric) for alarm in resources_of(template, "AWS::CloudWatch::Alarm").values()
               for ns, metric, _ in alarm_metrics(alarm)}
    missing = {why for key, why in REQUIRED_ALARMS.items() if key not in watched}
    assert missing == set()


def test_custom_metric_alarms_match_what_the_code_emits(template):
    for alarm in resources_of(template, "AWS::CloudWatch::Alarm").values():
        for namespace, metric, dimensions in alarm_metrics(alarm):
            if namespace != "MaasGateway":
                continue
            service = "maas-inference" if metric == "InferenceGpuActive" else "maas-gateway"
            assert dimensions == {"service": service}, metric
            source = ROOT / CUSTOM_METRIC_SOURCES[metric]
            files = [source] if source.is_file() else list(source.rglob("*.py"))
            emitted = any(f'"{metric}"' in f.read_text() for f in files)
            assert emitted, metric


def test_cpu_fallback_alarm_treats_silence_as_failure(template):
    alarm = template["Resources"]["InferenceCpuFallbackAlarm"]
    props = alarm["Properties"]
    assert alarm["Condition"] == "RequireGpu"
    assert (props["Namespace"], props["MetricName"]) == ("MaasGateway", "InferenceGpuActive")
    assert props["Dimensions"] == [{"Name": "service", "Value": "maas-inference"}]
    assert (props["Statistic"], props["ComparisonOperator"], props["Threshold"]) == ("Minimum", "LessThanThreshold", 1)
    assert props["TreatMissingData"] == "breaching"


def test_throttle_alarm_leaves_the_flusher_out(template):
    metrics = template["Resources"]["LambdaThrottlesAlarm"]["Properties"]["Metrics"]
    functions = {m["MetricStat"]["Metric"]["Dimensions"][0]["Value"]["Ref"] for m in metrics if "MetricStat" in m}
    assert functions == {"InvokeFunction", "BillingFunction", "ReportsFunction"}


def test_memorydb_alarms_cover_every_node(template):
    for name in ("RedisMemoryAlarm", "RedisCpuAlarm"):
        (query,) = template["Resources"][name]["Properties"]["Metrics"]
        assert "WHERE ClusterName = 'maas-${Stage}'" in query["Expression"]["Fn::Sub"]
    assert template["Resources"]["RedisCluster"]["Properties"]["ClusterName"] == {"Fn::Sub": "maas-${Stage}"}


# ------------------------------------------------------------------------ drift on a schedule


def test_ledger_drift_is_measured_daily(template):
    fn = template["Resources"]["ReconcileFunction"]["Properties"]
    (event,) = fn["Events"].values()
    assert event["Type"] == "Schedule" and event["Properties"]["Schedule"].startswith("cron(")
    assert fn["VpcConfig"] == {"Ref": "AWS::NoValue"}  # DynamoDB and CloudWatch only: no endpoint to pay for
    policies = fn["Policies"]
    assert {"DynamoDBReadPolicy": {"TableName": {"Ref": "MaasTable"}}} in policies
    assert not any("DynamoDBCrudPolicy" in p for p in policies if isinstance(p, dict))
    not_run = template["Resources"]["ReconcileNotRunAlarm"]["Properties"]
    assert (not_run["MetricName"], not_run["TreatMissingData"]) == ("LedgerDrift", "breaching")


# ------------------------------------------------------------------------ timeouts


def test_timeouts_leave_room_to_refund_under_api_gateways_29_s(template):
    from gateway.config import Settings

    glob = template["Globals"]["Function"]
    lambda_timeout = glob["Timeout"]
    inference_s = float(glob["Environment"]["Variables"]["MAAS_INFERENCE_TIMEOUT_S"])
    assert lambda_timeout < 29
    connect_s = 2
    refund_and_answer_s = 2  # one Redis round trip (0.5 s timeout) and the response, with margin
    assert inference_s + connect_s + refund_and_answer_s <= lambda_timeout
    assert Settings.from_env({"MAAS_INFERENCE_TIMEOUT_S": str(inference_s)}).inference_timeout_s == inference_s
    for name in ("InvokeFunction", "BillingFunction", "ReportsFunction"):
        assert "Timeout" not in template["Resources"][name]["Properties"], name  # the global one


def test_sagemaker_client_makes_one_attempt_within_the_deadline():
    from gateway.config import Settings
    from gateway.wiring import Container

    settings = Settings(sagemaker_endpoint="maas-embeddings-test", inference_url=None, inference_timeout_s=20)
    forwarder = Container(settings).inference.inner  # behind the circuit breaker
    assert forwarder.max_timeout_s == 20
    for seconds in (20, 7):  # a call's read timeout is its own remaining time, at most 20 s
        config = forwarder.client_for(seconds).meta.config
        assert config.retries["total_max_attempts"] == 1  # not max_attempts=1, which means 2 attempts
        assert config.read_timeout == seconds and config.connect_timeout <= 2
    assert forwarder.client_for(7) is forwarder.client_for(7)  # built once per value


def test_cold_start_clients_fail_fast():
    # botocore's defaults (60 s connect, 60 s read, legacy retries) would outlive the request.
    from gateway.config import Settings
    from gateway.wiring import Container

    container = Container(Settings(key_pepper_param="/maas/test/key-pepper", inference_url="http://127.0.0.1:9"))
    made: list = []

    class Session:  # records the client asked for, then stops (no AWS here)
        def client(self, name, config=None, **_):  # type: ignore[no-untyped-def]
            made.append((name, config))
            raise RuntimeError("stop")

    container.__dict__["boto_session"] = Session()  # handed in, as Container(...) takes clients
    with pytest.raises(RuntimeError):
        _ = container.pepper
    ((name, config),) = made
    assert name == "ssm" and config.connect_timeout <= 2 and config.read_timeout <= 3
    assert config.retries == {"total_max_attempts": 2, "mode": "standard"}


# ------------------------------------------------------------------------ flusher invocation


def test_flusher_async_invocation_is_configured_on_the_function(template):
    props = template["Resources"]["FlusherFunction"]["Properties"]
    assert props["EventInvokeConfig"] == {"MaximumRetryAttempts": 0, "MaximumEventAgeInSeconds": 60}


# ------------------------------------------------------------------------ SageMaker day 2


def test_autoscaling_follows_concurrency_with_a_boot_time_cooldown(template):
    policy = template["Resources"]["InferenceScalingPolicy"]
    config = policy["Properties"]["TargetTrackingScalingPolicyConfiguration"]
    assert config["PredefinedMetricSpecification"]["PredefinedMetricType"] == \
        "SageMakerVariantConcurrentRequestsPerModelHighResolution"
    assert config["ScaleOutCooldown"] == {"Ref": "InferenceScaleOutCooldownSeconds"}
    assert param_default(template, "InferenceScaleOutCooldownSeconds") >= 300  # GPU boot + image + /ping
    # Autoscaling can be detached for an instance-type change (SageMaker refuses it otherwise).
    assert policy["Condition"] == template["Resources"]["InferenceScalableTarget"]["Condition"] == \
        "EnableInferenceAutoscaling"


def test_image_rollouts_keep_the_current_capacity(template):
    assert template["Resources"]["InferenceEndpoint"]["Properties"]["RetainAllVariantProperties"] is True


def test_operations_no_longer_promises_a_blue_green_instance_type_change():
    operations = (ROOT / "docs" / "OPERATIONS.md").read_text()
    assert "SageMaker swaps blue/green without downtime" not in operations
    assert "InferenceAutoscaling=false" in operations


# ------------------------------------------------------------------------ least privilege


def lua_commands() -> set[str]:
    import re

    found = set()  # redis.call('X', ...) and pcall(redis.call, 'X', ...)
    for script in (ROOT / "gateway" / "lua").glob("*.lua"):
        for command, sub in re.findall(r"redis\.p?call\s*[(,]\s*'([A-Za-z]+)'(?:\s*,\s*'([A-Za-z]+)')?",
                                       script.read_text()):
            found.add(f"{command}|{sub}".lower() if command.upper() in {"XINFO", "XGROUP"} else command.lower())
    return found


def test_memorydb_user_is_limited_to_the_commands_the_gateway_runs(template):
    access = template["Resources"]["RedisUser"]["Properties"]["AccessString"].split()
    assert access[:3] == ["on", "~*", "-@all"]
    assert not any(rule.startswith("+@") or rule.startswith("&") for rule in access)
    allowed = {rule[1:] for rule in access if rule.startswith("+")}
    # Redis checks the commands a script runs against the caller's ACL as well.
    assert lua_commands() - allowed == set()


def test_ecr_pull_is_limited_to_the_images_repository(template):
    role = template["Resources"]["InferenceExecutionRole"]["Properties"]["Policies"][0]["PolicyDocument"]
    (pull,) = [s for s in role["Statement"] if "ecr:BatchGetImage" in s["Action"]]
    refs = {"AWS::Partition": "aws", "AWS::Region": "us-east-1", "AWS::AccountId": "123456789012"}
    for uri, repository in [
        ("123456789012.dkr.ecr.us-east-1.amazonaws.com/maas-inference:abc123", "maas-inference"),
        ("123456789012.dkr.ecr.us-east-1.amazonaws.com/team/maas-inference:v1.2", "team/maas-inference"),
        ("123456789012.dkr.ecr.us-east-1.amazonaws.com/maas-inference@sha256:" + "a" * 64, "maas-inference"),
        ("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn/maas-inference:x", "maas-inference"),
    ]:
        arn = evaluate(pull["Resource"], {**refs, "InferenceImageUri": uri})
        assert arn == f"arn:aws:ecr:us-east-1:123456789012:repository/{repository}", uri


def test_invoke_function_reads_and_only_appends(template):
    policies = template["Resources"]["InvokeFunction"]["Properties"]["Policies"]
    assert not any("DynamoDBCrudPolicy" in p for p in policies if isinstance(p, dict))
    statements = [s for p in policies if isinstance(p, dict) for s in p.get("Statement", [])]
    writes = {a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
              if a.startswith("dynamodb:")}
    assert writes == {"dynamodb:PutItem", "dynamodb:UpdateItem"}  # the ledger transaction when Redis is down


def test_data_at_rest_uses_the_customer_managed_key(template):
    res = template["Resources"]
    assert res["MaasTable"]["Properties"]["SSESpecification"] == {
        "SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": {"Ref": "DataKey"}}
    assert res["RedisCluster"]["Properties"]["KmsKeyId"] == {"Ref": "DataKey"}
    assert res["RedisPasswordSecret"]["Properties"]["KmsKeyId"] == {"Ref": "DataKey"}
    for name, group in resources_of(template, "AWS::Logs::LogGroup").items():
        assert group["Properties"]["KmsKeyId"] == {"Fn::GetAtt": ["DataKey", "Arn"]}, name
    assert res["DataKey"]["DeletionPolicy"] == "Retain"  # snapshots and backups outlive the stack
    logs = [s for s in res["DataKey"]["Properties"]["KeyPolicy"]["Statement"]
            if s["Principal"].get("Service") == {"Fn::Sub": "logs.${AWS::Region}.amazonaws.com"}]
    assert logs and "ArnLike" in logs[0]["Condition"]


def test_functions_that_read_the_redis_secret_may_decrypt_it(template):
    for name in ("InvokeFunction", "BillingFunction", "ReportsFunction", "FlusherFunction", "FlushDispatcherFunction"):
        policies = template["Resources"][name]["Properties"]["Policies"]
        statements = [s for p in policies if isinstance(p, dict) for s in p.get("Statement", [])]
        (decrypt,) = [s for s in statements if s["Action"] == "kms:Decrypt"]
        assert decrypt["Resource"] == {"Fn::GetAtt": ["DataKey", "Arn"]}, name
        assert "kms:ViaService" in decrypt["Condition"]["StringEquals"], name


def test_inference_is_network_isolated_and_memorydb_keeps_a_final_snapshot(template):
    assert template["Resources"]["InferenceModel"]["Properties"]["EnableNetworkIsolation"] is True
    name = evaluate(template["Resources"]["RedisCluster"]["Properties"]["FinalSnapshotName"],
                    {"Stage": "dev", "AWS::StackId":
                     "arn:aws:cloudformation:us-east-1:123456789012:stack/maas-gateway-dev/0f1e2d3c-aaaa-bbbb-cccc-1234"})
    assert name == "maas-dev-final-0f1e2d3c-aaaa-bbbb-cccc-1234"


# ------------------------------------------------------------------------ the admin surface


def test_billing_can_be_limited_to_allowed_addresses(template):
    res = template["Resources"]
    assert res["AdminAllowedIpSet"]["Condition"] == "HasAdminAllowList"
    assert res["AdminAllowedIpSet"]["Properties"]["Addresses"] == {"Ref": "AdminAllowedCidrs"}
    rules = res["WebAcl"]["Properties"]["Rules"]
    (conditional,) = [r for r in rules if "Fn::If" in r]
    condition, rule, otherwise = conditional["Fn::If"]
    assert (condition, otherwise) == ("HasAdminAllowList", {"Ref": "AWS::NoValue"})
    path, allowed = rule["Statement"]["AndStatement"]["Statements"]
    assert path["ByteMatchStatement"]["SearchString"] == "/billing/"
    assert allowed["NotStatement"]["Statement"]["IPSetReferenceStatement"]["Arn"] == {
        "Fn::GetAtt": ["AdminAllowedIpSet", "Arn"]}
    assert rule["Action"]["Block"]["CustomResponse"]["ResponseCode"] == 403


def test_custom_domain_is_optional_and_mapped_to_the_stage(template):
    res = template["Resources"]
    assert res["ApiDomain"]["Condition"] == "HasCustomDomain"
    assert res["ApiDomain"]["Properties"]["RegionalCertificateArn"] == {"Ref": "CertificateArn"}
    assert res["ApiDomain"]["Properties"]["SecurityPolicy"] == "TLS_1_2"
    assert res["ApiBasePathMapping"]["Properties"]["Stage"] == {"Ref": "MaasApi.Stage"}
    assert res["ApiDnsRecord"]["Condition"] == "HasDnsRecord"
    assert "CustomDomainNeedsCertificate" in template["Rules"]


def test_waf_logs_blocked_requests_without_keys(template):
    logging = template["Resources"]["WafLogging"]["Properties"]
    assert logging["ResourceArn"] == {"Fn::GetAtt": ["WebAcl", "Arn"]}
    redacted = {f["SingleHeader"]["Name"] for f in logging["RedactedFields"]}
    assert redacted == {"authorization", "x-api-key"}
    group = template["Resources"]["WafLogGroup"]["Properties"]["LogGroupName"]["Fn::Sub"]
    assert group.startswith("aws-waf-logs-")


# ------------------------------------------------------------------------ edge fairness


def test_each_api_key_is_rate_limited_at_the_edge(template):
    # One rate per key, on each header a key may come in, so one tenant cannot take the whole
    # stage throttle; above any plan's own limit, so the gateway's exact 429s answer first.
    rules = {r["Name"]: r for r in template["Resources"]["WebAcl"]["Properties"]["Rules"] if "Name" in r}
    headers = set()
    for name in ("RateLimitPerAuthorizationHeader", "RateLimitPerApiKeyHeader"):
        statement = rules[name]["Statement"]["RateBasedStatement"]
        assert statement["AggregateKeyType"] == "CUSTOM_KEYS"
        assert statement["Limit"] == {"Ref": "WafRateLimitPerKey"} and statement["EvaluationWindowSec"] == 60
        (key,) = statement["CustomKeys"]
        headers.add(key["Header"]["Name"])
        response = rules[name]["Action"]["Block"]["CustomResponse"]
        assert response["ResponseCode"] == 429
        assert response["ResponseHeaders"] == [{"Name": "Retry-After", "Value": "60"}]
    assert headers == {"authorization", "x-api-key"}
    per_key = param_default(template, "WafRateLimitPerKey")
    plans = json.loads((ROOT / "infra" / "plans.json").read_text())["plans"]
    largest = max(p["limits"]["requests_per_minute"] for p in plans)
    assert per_key >= 2 * largest  # a full bucket plus a minute of refill
    assert per_key < 60 * param_default(template, "ApiThrottleRateLimit")


# ------------------------------------------------------------------------ aliases and rollback


def test_functions_deploy_through_an_alias_that_alarms_roll_back(template):
    glob = template["Globals"]["Function"]
    assert glob["AutoPublishAlias"] == "live"
    preference = glob["DeploymentPreference"]
    assert preference["Type"] == {"Ref": "DeploymentType"}
    assert {a["Ref"] for a in preference["Alarms"]} == {"Api5xxRateAlarm", "FunctionErrorsAlarm"}
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    assert 'DeploymentType="Canary10Percent5Minutes"' in config["prod"]["deploy"]["parameters"]["parameter_overrides"]


# ------------------------------------------------------------------------ minor items


WAF_BODY_LIMIT_BYTES = 2_500_000
LAMBDA_EVENT_LIMIT_BYTES = 6 * 1024 * 1024


def test_bodies_lambda_cannot_take_get_a_413_at_the_edge(template):
    import re

    from gateway.config import Settings

    rules = {r["Name"]: r for r in template["Resources"]["WebAcl"]["Properties"]["Rules"] if "Name" in r}
    rule = rules["BodyTooLarge"]
    statement = rule["Statement"]["RegexMatchStatement"]
    assert statement["FieldToMatch"] == {"SingleHeader": {"Name": "content-length"}}
    assert rule["Action"]["Block"]["CustomResponse"]["ResponseCode"] == 413
    pattern = re.compile(statement["RegexString"])
    for size in (0, 1, 2_097_152, WAF_BODY_LIMIT_BYTES - 1):
        assert not pattern.search(str(size)), size
    for size in (WAF_BODY_LIMIT_BYTES, 2_999_999, 6_000_000, 9_999_999, 10_485_760, 123_456_789):
        assert pattern.search(str(size)), size
    # The gateway's own 413 answers below the edge's; above it, JSON-escaping (at most 2x) plus the
    # event's other fields still fit Lambda's 6 MB event.
    assert Settings().max_body_bytes < WAF_BODY_LIMIT_BYTES
    assert 2 * WAF_BODY_LIMIT_BYTES + 64 * 1024 < LAMBDA_EVENT_LIMIT_BYTES


def test_existing_vpc_with_endpoints_needs_route_tables(template):
    rule = template["Rules"]["ExistingVpcEndpointsNeedRouteTables"]
    assert rule["Assertions"][0]["Assert"] == {
        "Fn::Not": [{"Fn::EachMemberEquals": [{"Ref": "PrivateRouteTableIds"}, ""]}]}


@pytest.mark.parametrize("subnet, index", [("PrivateSubnetA", 0), ("PrivateSubnetB", 1)])
def test_subnets_are_placed_by_availability_zone_id(template, subnet, index):
    props = template["Resources"][subnet]["Properties"]
    assert props["AvailabilityZoneId"] == {
        "Fn::If": ["HasAzIds", {"Fn::Select": [index, {"Ref": "AvailabilityZoneIds"}]}, {"Ref": "AWS::NoValue"}]}
    assert props["AvailabilityZone"]["Fn::If"][1] == {"Ref": "AWS::NoValue"}
