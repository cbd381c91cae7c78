"""Each function's role as template.yaml defines it: its Policies (inline statements, SAM policy
templates), the managed policies SAM attaches for it, and what AWS itself does with the role
(log delivery, VPC network interfaces, stream polling) as requests that role must allow.

Intrinsics resolve to fixed placeholders: region us-east-1, account 123456789012, parameters at
their defaults, a resource's Ref and GetAtt as the ARNs and names below."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from infra.local.template import load_template
from tests.iam.policy import Request

REGION, ACCOUNT, PARTITION = "us-east-1", "123456789012", "aws"
_PSEUDO = {"AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::Partition": PARTITION,
           "AWS::StackName": "maas-gateway", "AWS::URLSuffix": "amazonaws.com"}
_ARN = f"arn:{PARTITION}:{{service}}:{REGION}:{ACCOUNT}:{{rest}}"
_NO_VALUE = object()


def arn(service: str, rest: str) -> str:
    return _ARN.format(service=service, rest=rest)


# SAM's policy templates this template uses, as samtranslator 1.115's
# policy_templates_data/policy_templates.json defines them (tests/unit/test_iam_check.py compares).
_DYNAMODB_READ = ["dynamodb:GetItem", "dynamodb:Scan", "dynamodb:Query", "dynamodb:BatchGetItem",
                  "dynamodb:DescribeTable"]
_DYNAMODB_CRUD = ["dynamodb:GetItem", "dynamodb:DeleteItem", "dynamodb:PutItem", "dynamodb:Scan", "dynamodb:Query",
                  "dynamodb:UpdateItem", "dynamodb:BatchWriteItem", "dynamodb:BatchGetItem", "dynamodb:DescribeTable",
                  "dynamodb:ConditionCheckItem"]


def _table_resources(p: dict[str, str]) -> list[str]:
    return [arn("dynamodb", f"table/{p['TableName']}"), arn("dynamodb", f"table/{p['TableName']}/index/*")]


POLICY_TEMPLATES = {
    "DynamoDBReadPolicy": lambda p: [{"Effect": "Allow", "Action": _DYNAMODB_READ, "Resource": _table_resources(p)}],
    "DynamoDBCrudPolicy": lambda p: [{"Effect": "Allow", "Action": _DYNAMODB_CRUD, "Resource": _table_resources(p)}],
    "AWSSecretsManagerGetSecretValuePolicy": lambda p: [
        {"Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"], "Resource": p["SecretArn"]}],
    "LambdaInvokePolicy": lambda p: [{"Effect": "Allow", "Action": ["lambda:InvokeFunction"],
                                      "Resource": arn("lambda", f"function:{p['FunctionName']}*")}],
    "EventBridgePutEventsPolicy": lambda p: [{"Effect": "Allow", "Action": "events:PutEvents",
                                              "Resource": arn("events", f"event-bus/{p['EventBusName']}")}],
}

# The AWS managed policies SAM attaches to a function's generated role: the basic execution role
# always, the VPC one with VpcConfig, X-Ray's with Tracing: Active, the DynamoDB stream one with a
# DynamoDB event (https://docs.aws.amazon.com/serverless-application-model/latest/developerguide/
# sam-resource-function.html, Role and Tracing; the managed policies' documents:
# https://docs.aws.amazon.com/aws-managed-policy/latest/reference/AWSLambdaBasicExecutionRole.html, ...).
_LOGS = {"Effect": "Allow", "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
         "Resource": "*"}
MANAGED = {
    "AWSLambdaBasicExecutionRole": [_LOGS],
    "AWSLambdaVPCAccessExecutionRole": [_LOGS, {"Effect": "Allow", "Resource": "*", "Action": [
        "ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets",
        "ec2:DeleteNetworkInterface", "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses"]}],
    "AWSXrayWriteOnlyAccess": [{"Effect": "Allow", "Resource": "*", "Action": [
        "xray:PutTraceSegments", "xray:PutTelemetryRecords", "xray:GetSamplingRules", "xray:GetSamplingTargets",
        "xray:GetSamplingStatisticSummaries"]}],
    "AWSLambdaDynamoDBExecutionRole": [_LOGS, {"Effect": "Allow", "Resource": "*", "Action": [
        "dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator", "dynamodb:ListStreams"]}],
}


class Resolver:
    """Resolves CloudFormation intrinsics to placeholder values."""

    def __init__(self, template: dict[str, Any]) -> None:
        self.template = template
        self.resources: dict[str, Any] = template["Resources"]
        self.parameters = {name: str(p.get("Default", "")) for name, p in template.get("Parameters", {}).items()}

    def ref(self, name: str) -> Any:
        if name in _PSEUDO:
            return _PSEUDO[name]
        if name == "AWS::NoValue":
            return _NO_VALUE
        if name in self.parameters:
            return self.parameters[name]
        if name.endswith(".Alias"):  # SAM: AutoPublishAlias's alias ARN
            return arn("lambda", f"function:{name.removesuffix('.Alias')}:live")
        kind = self.resources[name]["Type"]
        # Ref's return values: https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/
        # aws-resource-secretsmanager-secret.html#aws-resource-secretsmanager-secret-return-values, etc.
        return {
            "AWS::SecretsManager::Secret": lambda: arn("secretsmanager", f"secret:{name}-AbCdEf"),
            "AWS::SageMaker::Endpoint": lambda: arn("sagemaker", f"endpoint/{name.lower()}"),
            "AWS::SQS::Queue": lambda: f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{name}",
            "AWS::Logs::LogGroup": lambda: self.value(self.resources[name]["Properties"]["LogGroupName"]),
        }.get(kind, lambda: name)()

    def get_att(self, name: str, attribute: str) -> str:
        kind = self.resources[name]["Type"] if name in self.resources else ""
        if attribute == "StreamArn":
            return arn("dynamodb", f"table/{name}/stream/2026-01-01T00:00:00.000")
        if attribute == "Arn":
            return {
                "AWS::DynamoDB::Table": arn("dynamodb", f"table/{name}"),
                "AWS::KMS::Key": arn("kms", f"key/{name}"),
                "AWS::SQS::Queue": arn("sqs", name),
                "AWS::Serverless::Function": arn("lambda", f"function:{name}"),
                "AWS::Logs::LogGroup": arn("logs", f"log-group:{name}:*"),
                "AWS::S3::Bucket": f"arn:aws:s3:::{name}",  # S3 ARNs name no region or account
            }.get(kind, arn(kind.split("::")[1].lower() if kind else "x", name))
        if attribute == "EndpointName":
            return name
        return f"{name}.{attribute}"  # ClusterEndpoint.Address, ...

    def condition(self, name: str) -> bool:
        return bool(self.value(self.template["Conditions"][name]))

    def value(self, node: Any) -> Any:
        """The node with every intrinsic resolved; AWS::NoValue entries dropped."""
        if isinstance(node, list):
            return [v for v in (self.value(n) for n in node) if v is not _NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (key, arg), = node.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Condition":
                return self.condition(arg)
            if key == "Fn::GetAtt":
                return self.get_att(arg[0], ".".join(arg[1:]))
            if key == "Fn::Sub":
                text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], self.value(arg[1]))
                return self._sub(text, variables)
            if key == "Fn::If":
                return self.value(arg[1] if self.condition(arg[0]) else arg[2])
            if key == "Fn::Equals":
                return str(self.value(arg[0])) == str(self.value(arg[1]))
            if key == "Fn::Not":
                return not self.value(arg[0])
            if key == "Fn::And":
                return all(self.value(a) for a in arg)
            if key == "Fn::Or":
                return any(self.value(a) for a in arg)
            if key == "Fn::Join":
                return arg[0].join(str(v) for v in self.value(arg[1]))
            if key == "Fn::Select":
                return self.value(arg[1])[int(self.value(arg[0]))]
        out = {k: self.value(v) for k, v in node.items()}
        return {k: v for k, v in out.items() if v is not _NO_VALUE}

    def _sub(self, text: str, variables: dict[str, Any]) -> str:
        import re

        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in variables:
                return str(variables[name])
            if "." in name and not name.startswith("AWS::"):
                resource, attribute = name.split(".", 1)
                return self.get_att(resource, attribute)
            return str(self.ref(name))

        return re.sub(r"\$\{([^}!]+)\}", one, text)


@dataclass
class Role:
    function: str
    statements: list[dict[str, Any]]
    implicit: list[Request] = field(default_factory=list)  # what AWS does with the role
    environment: dict[str, str] = field(default_factory=dict)
    code_dir: str = ""  # functions/<code_dir>/


def _policy_statements(policy: Any) -> list[dict[str, Any]]:
    if isinstance(policy, str):
        return MANAGED[policy.rsplit("/", 1)[-1]]
    if "Statement" in policy:
        return _listed(policy["Statement"])
    (name, parameters), = policy.items()
    return POLICY_TEMPLATES[name](parameters)


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def kms_key_of_table(resolver: Resolver, table: str) -> str | None:
    """The table's customer-managed key ARN, or None for an AWS owned or managed key."""
    sse = resolver.value(resolver.resources[table]["Properties"].get("SSESpecification") or {})
    key = sse.get("KMSMasterKeyId") if sse.get("SSEEnabled") else None
    if not key or str(key).startswith("alias/aws/"):
        return None
    return key if str(key).startswith("arn:") else arn("kms", f"key/{key}")


@functools.cache
def roles() -> dict[str, Role]:
    """Every AWS::Serverless::Function's role in template.yaml, by logical id."""
    return roles_of(load_template())


def roles_of(template: dict[str, Any]) -> dict[str, Role]:
    r = Resolver(template)
    globals_ = template.get("Globals", {}).get("Function", {})
    found: dict[str, Role] = {}
    for name, resource in r.resources.items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        props = resource["Properties"]
        if "Role" in props:
            raise NotImplementedError(f"{name}: an explicit Role (read its AWS::IAM::Role here)")
        statements = list(MANAGED["AWSLambdaBasicExecutionRole"])
        implicit: list[Request] = []
        vpc = r.value(props["VpcConfig"]) if "VpcConfig" in props else r.value(globals_.get("VpcConfig"))
        if vpc and vpc is not _NO_VALUE:
            statements += MANAGED["AWSLambdaVPCAccessExecutionRole"]
            # Lambda creates the function's network interfaces with its role:
            # https://docs.aws.amazon.com/lambda/latest/dg/configuration-vpc.html#configuration-vpc-permissions
            implicit += [Request(f"ec2:{a}", "*") for a in
                         ("CreateNetworkInterface", "DescribeNetworkInterfaces", "DeleteNetworkInterface",
                          "DescribeSubnets", "AssignPrivateIpAddresses", "UnassignPrivateIpAddresses")]
        if (props.get("Tracing") or globals_.get("Tracing")) == "Active":
            statements += MANAGED["AWSXrayWriteOnlyAccess"]
            implicit += [Request("xray:PutTraceSegments", "*"), Request("xray:PutTelemetryRecords", "*")]
        log_group = (r.value(props.get("LoggingConfig") or {})).get("LogGroup") or f"/aws/lambda/{name}"
        # The runtime writes the function's logs with its role:
        # https://docs.aws.amazon.com/lambda/latest/dg/monitoring-cloudwatchlogs.html#monitoring-cloudwatchlogs-prereqs
        implicit += [Request(a, arn("logs", f"log-group:{log_group}:log-stream:2026/01/01/[$LATEST]0"))
                     for a in ("logs:CreateLogStream", "logs:PutLogEvents")]
        for event in (props.get("Events") or {}).values():
            implicit += _event_source_needs(r, event, statements)
        for policy in r.value(props.get("Policies") or []):
            statements += _policy_statements(policy)
        environment = {**(globals_.get("Environment") or {}).get("Variables", {}),
                       **(props.get("Environment") or {}).get("Variables", {})}
        found[name] = Role(name, statements, implicit,
                           {k: str(v) for k, v in r.value(environment).items() if v not in ("", None)},
                           code_dir=str(props["CodeUri"]).rstrip("/").rsplit("/", 1)[-1])
    return found


def _event_source_needs(r: Resolver, event: dict[str, Any], statements: list[dict[str, Any]]) -> list[Request]:
    """A DynamoDB stream event source: Lambda polls the stream with the function's role (SAM attaches
    AWSLambdaDynamoDBExecutionRole, and sqs:SendMessage for an SQS on-failure destination)
    https://docs.aws.amazon.com/lambda/latest/dg/with-ddb.html#events-dynamodb-permissions"""
    if event["Type"] != "DynamoDB":
        return []
    props = r.value(event["Properties"])
    statements += MANAGED["AWSLambdaDynamoDBExecutionRole"]
    stream = props["Stream"]
    needs = [Request(f"dynamodb:{a}", stream) for a in ("DescribeStream", "GetRecords", "GetShardIterator")]
    needs.append(Request("dynamodb:ListStreams", "*"))
    destination = (props.get("DestinationConfig") or {}).get("OnFailure")
    if destination and destination["Type"] == "SQS":
        statements.append({"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": destination["Destination"]})
        needs.append(Request("sqs:SendMessage", destination["Destination"]))
    # The stream's records are encrypted with the table's key:
    # https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/encryption.usagenotes.html
    table = stream.split(":table/", 1)[1].split("/", 1)[0]
    key = kms_key_of_table(r, table)
    if key:
        needs += [Request(a, key, {"kms:ViaService": f"dynamodb.{REGION}.amazonaws.com"})
                  for a in ("kms:Decrypt", "kms:DescribeKey")]
    return needs


def kms_key_of_bucket(resolver: Resolver, bucket: str) -> str | None:
    """The customer-managed key a bucket encrypts new objects with by default, if any."""
    rules = (resolver.resources.get(bucket, {}).get("Properties", {}).get("BucketEncryption", {})
             .get("ServerSideEncryptionConfiguration", []))
    for rule in rules:
        default = rule.get("ServerSideEncryptionByDefault", {})
        if default.get("SSEAlgorithm") == "aws:kms" and default.get("KMSMasterKeyID"):
            key = resolver.value(default["KMSMasterKeyID"])
            return key if str(key).startswith("arn:") else arn("kms", f"key/{key}")
    return None
