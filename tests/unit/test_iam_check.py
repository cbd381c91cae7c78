"""The IAM check's own parts (tests/iam): the evaluator, the template's roles, calls -> requests."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from infra.local.template import load_template
from tests.iam.policy import Request, allowed
from tests.iam.recorder import Call, denied, requests_for
from tests.iam.roles import POLICY_TEMPLATES, Resolver, arn, roles

ROOT = Path(__file__).resolve().parents[2]
TABLE = "arn:aws:dynamodb:us-east-1:123456789012:table/T"
KEY = "arn:aws:kms:us-east-1:123456789012:key/K"
VIA_DYNAMODB = {"kms:ViaService": "dynamodb.us-east-1.amazonaws.com"}
VIA_SECRETS = {"kms:ViaService": "secretsmanager.us-east-1.amazonaws.com"}


def test_an_allow_statement_allows_its_action_on_its_resource():
    statements = [{"Effect": "Allow", "Action": ["dynamodb:GetItem"], "Resource": TABLE}]
    assert allowed(statements, Request("dynamodb:GetItem", TABLE))
    assert allowed(statements, Request("DynamoDB:getitem", TABLE))  # actions ignore case


def test_nothing_is_allowed_unless_a_statement_allows_it():
    statements = [{"Effect": "Allow", "Action": "dynamodb:GetItem", "Resource": TABLE}]
    assert not allowed(statements, Request("dynamodb:PutItem", TABLE))
    assert not allowed(statements, Request("dynamodb:GetItem", TABLE + "2"))
    assert not allowed(statements, Request("dynamodb:GetItem", TABLE.replace("/T", "/t")))  # ARNs do not
    assert not allowed([], Request("dynamodb:GetItem", TABLE))


def test_wildcards_in_actions_and_resources():
    statements = [{"Effect": "Allow", "Action": "kms:GenerateDataKey*", "Resource": "arn:aws:kms:*:*:key/*"}]
    assert allowed(statements, Request("kms:GenerateDataKeyWithoutPlaintext", KEY))
    assert not allowed(statements, Request("kms:Decrypt", KEY))
    index = [{"Effect": "Allow", "Action": "dynamodb:Query", "Resource": TABLE + "/index/*"}]
    assert allowed(index, Request("dynamodb:Query", TABLE + "/index/gsi1"))
    assert not allowed(index, Request("dynamodb:Query", TABLE))


def test_a_condition_must_hold():
    statements = [{"Effect": "Allow", "Action": "kms:Decrypt", "Resource": KEY,
                   "Condition": {"StringEquals": {"kms:ViaService": "secretsmanager.us-east-1.amazonaws.com"}}}]
    assert allowed(statements, Request("kms:Decrypt", KEY, VIA_SECRETS))
    assert not allowed(statements, Request("kms:Decrypt", KEY, VIA_DYNAMODB))  # the mismatch of issue 21
    assert not allowed(statements, Request("kms:Decrypt", KEY))  # a key the request lacks


def test_any_value_of_a_condition_key_matches():
    statements = [{"Effect": "Allow", "Action": "kms:Decrypt", "Resource": KEY, "Condition": {"StringEquals": {
        "kms:ViaService": ["secretsmanager.us-east-1.amazonaws.com", "dynamodb.us-east-1.amazonaws.com"]}}}]
    assert allowed(statements, Request("kms:Decrypt", KEY, VIA_DYNAMODB))


def test_for_all_values_checks_every_value_of_a_multivalued_key():
    statements = [{"Effect": "Allow", "Action": "dynamodb:PutItem", "Resource": TABLE,
                   "Condition": {"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": ["RECONCILE"]}}}]
    assert allowed(statements, Request("dynamodb:PutItem", TABLE, {"dynamodb:LeadingKeys": ("RECONCILE",)}))
    assert not allowed(statements, Request("dynamodb:PutItem", TABLE, {"dynamodb:LeadingKeys": ("TENANT#t",)}))


def test_an_explicit_deny_wins():
    statements = [{"Effect": "Allow", "Action": "dynamodb:*", "Resource": "*"},
                  {"Effect": "Deny", "Action": "dynamodb:DeleteItem", "Resource": TABLE}]
    assert allowed(statements, Request("dynamodb:PutItem", TABLE))
    assert not allowed(statements, Request("dynamodb:DeleteItem", TABLE))


def test_a_transaction_is_authorized_item_by_item():
    call = Call("F", "dynamodb", "TransactWriteItems", {"TransactItems": [
        {"Put": {"TableName": "t-test"}}, {"Update": {"TableName": "t-test"}},
        {"ConditionCheck": {"TableName": "t-test"}}]}, {"t-test": "MaasTable"})
    actions = [r.action for r in requests_for(call, Resolver(load_template())) if r.action.startswith("dynamodb:")]
    assert actions == ["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:ConditionCheckItem"]


def test_a_call_on_the_cmk_table_needs_the_key_via_dynamodb():
    call = Call("F", "dynamodb", "Query", {"TableName": "t-test", "IndexName": "gsi1"}, {"t-test": "MaasTable"})
    requests = requests_for(call, Resolver(load_template()))
    assert requests[0] == Request("dynamodb:Query", arn("dynamodb", "table/MaasTable/index/gsi1"))
    assert {(r.action, r.resource) for r in requests[1:]} == {
        ("kms:Decrypt", arn("kms", "key/DataKey")), ("kms:DescribeKey", arn("kms", "key/DataKey"))}
    assert all(r.context == VIA_DYNAMODB for r in requests[1:])


def test_a_denied_call_names_the_function_the_action_and_the_resource():
    template = load_template()
    call = Call("ReconcileFunction", "sagemaker-runtime", "InvokeEndpoint", {"EndpointName": "InferenceEndpoint"}, {})
    problems = denied([call], {"ReconcileFunction": roles()["ReconcileFunction"]}, Resolver(template))
    assert problems == ["ReconcileFunction: sagemaker:InvokeEndpoint on "
                        "arn:aws:sagemaker:us-east-1:123456789012:endpoint/inferenceendpoint "
                        "(needed by sagemaker-runtime.InvokeEndpoint)"]


def test_a_call_without_an_iam_mapping_fails_the_check():
    call = Call("ReconcileFunction", "sqs", "SendMessage", {"QueueUrl": "q", "MessageBody": "m"}, {})
    problems = denied([call], {"ReconcileFunction": roles()["ReconcileFunction"]}, Resolver(load_template()))
    assert problems == ["ReconcileFunction: no IAM mapping for sqs.SendMessage (needed by tests/iam/recorder.py)"]


def test_an_object_written_to_the_files_bucket_needs_its_kms_key_too():
    template = load_template()
    put = {"Bucket": "FilesBucket", "Key": "files/ten_a/f.jsonl", "Body": b""}
    allowed_roles = {n: roles()[n] for n in ("BatchWorkerFunction", "ReconcileFunction")}
    calls = [Call(n, "s3", "PutObject", put, {}) for n in allowed_roles]
    problems = denied(calls, allowed_roles, Resolver(template))
    # The worker may; the reconciler may neither write the object nor use the key behind it.
    assert sorted(problems) == [
        "ReconcileFunction: kms:GenerateDataKey on arn:aws:kms:us-east-1:123456789012:key/DataKey "
        "{'kms:ViaService': 's3.us-east-1.amazonaws.com'} (needed by s3.PutObject)",
        "ReconcileFunction: s3:PutObject on arn:aws:s3:::FilesBucket/files/ten_a/f.jsonl (needed by s3.PutObject)"]


def test_a_denied_call_of_the_session_fails_the_run(monkeypatch):
    from types import SimpleNamespace

    from tests import conftest
    from tests.iam import recorder

    lines: list[str] = []
    reporter = SimpleNamespace(write_line=lambda line, **_: lines.append(line))
    session = SimpleNamespace(exitstatus=0, config=SimpleNamespace(
        pluginmanager=SimpleNamespace(get_plugin=lambda name: reporter)))
    call = Call("ReportsFunction", "dynamodb", "DeleteItem", {"TableName": "t"}, {"t": "MaasTable"})
    monkeypatch.setattr(recorder, "CALLS", [call])
    conftest.pytest_sessionfinish(session, 0)  # type: ignore[arg-type]
    assert session.exitstatus == pytest.ExitCode.TESTS_FAILED
    assert ("  ReportsFunction: dynamodb:DeleteItem on arn:aws:dynamodb:us-east-1:123456789012:table/MaasTable "
            "(needed by dynamodb.DeleteItem)") in lines


def test_vpc_functions_need_network_interfaces_and_the_others_do_not():
    found = roles()
    needs = {name: any(r.action == "ec2:CreateNetworkInterface" for r in role.implicit) for name, role in found.items()}
    assert needs["InvokeFunction"] and needs["ProjectorFunction"]
    assert not needs["DeliveryFunction"] and not needs["ReconcileFunction"]


def test_what_the_template_alone_requires_is_allowed():
    """The requests Lambda makes with each role (logs, network interfaces, stream polling)."""
    assert [p for p in denied([], roles(), Resolver(load_template()))] == []


SAM_PYTHON = ROOT / ".venv-sam" / "bin" / "python"


@pytest.mark.skipif(not SAM_PYTHON.exists(), reason="aws-sam-cli's venv (make test installs it) holds samtranslator")
def test_the_policy_templates_are_sams():
    script = ("import json, os, samtranslator; print(open(os.path.join(os.path.dirname(samtranslator.__file__), "
              "'policy_templates_data', 'policy_templates.json')).read())")
    templates = json.loads(subprocess.run([str(SAM_PYTHON), "-c", script], capture_output=True, text=True, check=True,
                                          env={**os.environ, "PYTHONPATH": ""}).stdout)["Templates"]
    for name, expand in POLICY_TEMPLATES.items():
        ours = expand({p: f"<{p}>" for p in templates[name]["Parameters"]})
        theirs = templates[name]["Definition"]["Statement"]
        assert [sorted(_listed(s["Action"])) for s in ours] == [sorted(_listed(s["Action"])) for s in theirs], name
        assert [len(_listed(s["Resource"])) for s in ours] == [len(_listed(s["Resource"])) for s in theirs], name


def _listed(value):  # type: ignore[no-untyped-def]
    return value if isinstance(value, list) else [value]


@pytest.mark.parametrize("pk, allowed_", [("RECONCILE", True), ("TENANT#ten_x", False)])
def test_the_reconciler_writes_only_its_own_partition(pk, allowed_):
    call = Call("ReconcileFunction", "dynamodb", "PutItem", {"TableName": "t", "Item": {"pk": {"S": pk}}},
                {"t": "MaasTable"})
    problems = denied([call], {"ReconcileFunction": roles()["ReconcileFunction"]}, Resolver(load_template()))
    assert (problems == []) is allowed_, problems
