"""Records every AWS API call a function's code makes (a botocore `before-parameter-build` hook on
the function container's boto3 session), and turns each into the IAM requests AWS authorizes:
the action and resource of the call itself, plus the KMS requests the service makes with the
caller's credentials on a customer-managed key behind it."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

from tests.iam.policy import Request, allowed
from tests.iam.roles import REGION, Resolver, Role, arn, kms_key_of_bucket, kms_key_of_table


@dataclass(frozen=True)
class Call:
    function: str  # the template's logical id
    service: str  # botocore's service name (dynamodb, sagemaker-runtime, ...)
    operation: str
    params: dict[str, Any] = field(hash=False)
    aliases: dict[str, str] = field(hash=False)  # the test's names -> the template's

    def name(self, value: str) -> str:
        return self.aliases.get(value, value)


CALLS: list[Call] = []  # every call recorded in this test session


def _record(function: str, aliases: dict[str, str], *, params: dict[str, Any], model: Any, **_: Any) -> None:
    CALLS.append(Call(function, model.service_model.service_name, model.name, dict(params), aliases))


def recording_session(function: str, region: str, aliases: dict[str, str]) -> Any:
    """A boto3 session whose every client records its calls as `function`'s."""
    import boto3

    session = boto3.session.Session(region_name=region)
    # Clients copy the session's handlers when created: register before any client exists.
    session.events.register("before-parameter-build", partial(_record, function, aliases))
    return session


# -- calls -> IAM requests --------------------------------------------------------------------
# DynamoDB: a transaction is authorized item by item, as the single-item actions
# https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/transaction-apis-iam.html
_TRANSACT_ITEM = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem",
                  "ConditionCheck": "ConditionCheckItem", "Get": "GetItem"}
_DYNAMODB_WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem"}


def _dynamodb(call: Call) -> list[tuple[str, str, dict[str, Any]]]:
    """(action, table name or table/index path, condition context) triples."""
    p, op = call.params, call.operation
    if op in ("TransactWriteItems", "TransactGetItems"):
        return [(_TRANSACT_ITEM[kind], body["TableName"], _leading_keys(body))
                for item in p["TransactItems"] for kind, body in item.items()]
    if op in ("BatchGetItem", "BatchWriteItem"):
        return [(op, table, {}) for table in p["RequestItems"]]
    table = p["TableName"]
    if op in ("Query", "Scan") and p.get("IndexName"):
        return [(op, f"{table}/index/{p['IndexName']}", {})]
    return [(op, table, _leading_keys(p))]


def _leading_keys(body: dict[str, Any]) -> dict[str, Any]:
    """dynamodb:LeadingKeys, the item's partition key (the table's is `pk`), for a single-item call
    https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/specifying-conditions.html"""
    pk = (body.get("Item") or body.get("Key") or {}).get("pk", {}).get("S")
    return {"dynamodb:LeadingKeys": (pk,)} if pk else {}


def requests_for(call: Call, resolver: Resolver) -> list[Request]:
    p = call.params
    if call.service == "dynamodb":
        found: list[Request] = []
        for action, target, context in _dynamodb(call):
            table, _, index = target.partition("/index/")
            table = call.name(table)
            found.append(Request(f"dynamodb:{action}", arn("dynamodb", f"table/{table}" + (
                f"/index/{index}" if index else "")), context))
            found += _table_key_needs(resolver, table, write=action in _DYNAMODB_WRITES)
        return found
    if call.service == "secretsmanager" and call.operation == "GetSecretValue":
        secret = call.name(p["SecretId"])
        return [Request("secretsmanager:GetSecretValue", secret), *_secret_key_needs(resolver, secret)]
    if call.service == "ssm" and call.operation == "GetParameter":
        # The pepper is a SecureString under the AWS managed aws/ssm key (README, OPERATIONS.md),
        # whose key policy admits the account's principals via SSM: no KMS grant to check.
        name = call.name(p["Name"])
        return [Request("ssm:GetParameter", arn("ssm", "parameter" + (name if name.startswith("/") else "/" + name)))]
    if call.service == "sagemaker-runtime":
        endpoint = call.name(p["EndpointName"]).lower()  # SageMaker ARNs are lower-case
        return [Request(f"sagemaker:{call.operation}", arn("sagemaker", f"endpoint/{endpoint}"))]
    if call.service == "lambda" and call.operation in ("Invoke", "InvokeAsync"):
        function = call.name(p["FunctionName"])
        return [Request("lambda:InvokeFunction", function if function.startswith("arn:")
                        else arn("lambda", f"function:{function}"))]
    if call.service == "events" and call.operation == "PutEvents":
        buses = {call.name(e.get("EventBusName", "default")) for e in p["Entries"]}
        return [Request("events:PutEvents", b if b.startswith("arn:") else arn("events", f"event-bus/{b}"))
                for b in sorted(buses)]
    if call.service == "s3" and call.operation in _S3_OBJECT_KMS:
        bucket = call.name(p["Bucket"])
        key = kms_key_of_bucket(resolver, bucket)
        return [Request(f"s3:{call.operation}", f"arn:aws:s3:::{bucket}/{p['Key']}"),
                *(Request(action, key, {"kms:ViaService": f"s3.{REGION}.amazonaws.com"})
                  for action in (_S3_OBJECT_KMS[call.operation] if key else ()))]
    if call.service == "cloudwatch" and call.operation == "PutMetricData":
        # No resource-level permissions; the namespace is a condition key:
        # https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazoncloudwatch.html
        return [Request("cloudwatch:PutMetricData", "*", {"cloudwatch:namespace": p["Namespace"]})]
    raise NotImplementedError(f"no IAM mapping for {call.service}.{call.operation}")


# An object under a bucket's default SSE-KMS key: a write has S3 generate a data key, a read
# decrypt it, with the caller's credentials
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/UsingKMSEncryption.html#aws-managed-customer-managed-keys
_S3_OBJECT_KMS = {"PutObject": ("kms:GenerateDataKey",), "GetObject": ("kms:Decrypt",), "DeleteObject": ()}


def _table_key_needs(resolver: Resolver, table: str, *, write: bool) -> list[Request]:
    """A table under a customer-managed key: DynamoDB uses the key with the caller's credentials
    https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/encryption.usagenotes.html
    (aws-cdk#10010): reads decrypt, writes also generate and re-encrypt data keys."""
    if resolver.resources.get(table, {}).get("Type") != "AWS::DynamoDB::Table":
        return []
    key = kms_key_of_table(resolver, table)
    if not key:
        return []
    actions = ["kms:Decrypt", "kms:DescribeKey"]
    if write:
        actions += ["kms:Encrypt", "kms:GenerateDataKey", "kms:ReEncryptFrom", "kms:ReEncryptTo"]
    return [Request(a, key, {"kms:ViaService": f"dynamodb.{REGION}.amazonaws.com"}) for a in actions]


def _secret_key_needs(resolver: Resolver, secret_arn: str) -> list[Request]:
    """A secret under a customer-managed key: reading it needs kms:Decrypt via Secrets Manager
    https://docs.aws.amazon.com/secretsmanager/latest/userguide/security-encryption.html#security-encryption-authz"""
    for name, resource in resolver.resources.items():
        if resource["Type"] == "AWS::SecretsManager::Secret" and resolver.ref(name) == secret_arn:
            key = resolver.value(resource["Properties"].get("KmsKeyId"))
            if key and not str(key).startswith("alias/aws/"):
                key = key if str(key).startswith("arn:") else arn("kms", f"key/{key}")
                return [Request("kms:Decrypt", key, {"kms:ViaService": f"secretsmanager.{REGION}.amazonaws.com"})]
    return []


# -- the check --------------------------------------------------------------------------------
def denied(calls: list[Call], roles: dict[str, Role], resolver: Resolver) -> list[str]:
    """'Function: action on resource (the calls that need it)' for every request no statement of
    the function's role allows (what AWS does with the role included), each once, sorted."""
    found: dict[tuple[str, str], set[str]] = {}
    for call in calls:
        role = roles[call.function]
        try:
            requests = requests_for(call, resolver)
        except NotImplementedError as error:  # a new kind of call fails the check until it is mapped
            found.setdefault((call.function, str(error)), set()).add("tests/iam/recorder.py")
            continue
        for request in requests:
            if not allowed(role.statements, request):
                found.setdefault((call.function, str(request)), set()).add(f"{call.service}.{call.operation}")
    for role in roles.values():
        for request in role.implicit:
            if not allowed(role.statements, request):
                found.setdefault((role.function, str(request)), set()).add("Lambda, for the function")
    return [f"{function}: {request} (needed by {', '.join(sorted(by))})"
            for (function, request), by in sorted(found.items())]
