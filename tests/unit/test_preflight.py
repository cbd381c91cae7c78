"""`maas admin preflight` against the AWS APIs' own request and response shapes (botocore's
Stubber validates both against the service models): what a fresh account, a redeploy and a
ready account look like, and that a blocker exits 1."""

from __future__ import annotations

import argparse
import datetime
import io
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

from gateway.cli import main
from gateway.cli.preflight import (
    Clients,
    DeployPlan,
    check_overrides,
    parse_overrides,
    plan_from_args,
    report,
    resolve_parameters,
    run_checks,
    samconfig_overrides,
)
from infra.local.template import load_template

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "123456789012"
REGION = "us-east-1"
IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/maas-inference:abc123"
DIGEST = "sha256:" + "e" * 64


def plan(**changes) -> DeployPlan:  # type: ignore[no-untyped-def]
    values = dict(stack_name="maas-gateway-dev", region=REGION, stage="dev", image_uri=IMAGE,
                  instance_type="ml.g5.xlarge", min_instances=1, max_instances=4,
                  reserved={"InvokeFunction": 0, "FlusherFunction": 0})
    values.update(changes)
    return DeployPlan(**values)


class Account:
    """Real boto3 clients whose answers are queued on Stubbers (no network)."""

    def __init__(self) -> None:
        session = boto3.session.Session(region_name=REGION, aws_access_key_id="testing",
                                        aws_secret_access_key="testing")
        self.clients = Clients(*(session.client(s) for s in
                                 ("lambda", "cloudformation", "service-quotas", "sagemaker", "ssm", "ecr", "sts")))
        self.stubs = {name: Stubber(getattr(self.clients, name)) for name in Clients.__dataclass_fields__}

    def concurrency(self, quota: int, unreserved: int, stack: dict[str, int] | None = None) -> None:
        self.stubs["lambda_client"].add_response(
            "get_account_settings",
            {"AccountLimit": {"ConcurrentExecutions": quota, "UnreservedConcurrentExecutions": unreserved}})
        for logical_id in ("InvokeFunction", "FlusherFunction"):
            params = {"StackName": "maas-gateway-dev", "LogicalResourceId": logical_id}
            if stack is None:
                self.stubs["cloudformation"].add_client_error(
                    "describe_stack_resource", "ValidationError", "Stack with id maas-gateway-dev does not exist",
                    expected_params=params)
                continue
            name = f"maas-gateway-dev-{logical_id}-ABC"
            self.stubs["cloudformation"].add_response("describe_stack_resource", {"StackResourceDetail": {
                "LogicalResourceId": logical_id, "PhysicalResourceId": name, "ResourceType": "AWS::Lambda::Function",
                "LastUpdatedTimestamp": datetime.datetime(2026, 11, 1), "ResourceStatus": "UPDATE_COMPLETE"}},
                expected_params=params)
            reserved = stack.get(logical_id)
            self.stubs["lambda_client"].add_response(
                "get_function_concurrency", {"ReservedConcurrentExecutions": reserved} if reserved else {},
                expected_params={"FunctionName": name})

    def gpu_quota(self, value: int, used_elsewhere: int = 0, applied: bool = True) -> None:
        quota = {"ServiceCode": "sagemaker", "QuotaCode": "L-1234ABCD", "QuotaName": "ml.g5.xlarge for endpoint usage",
                 "Value": float(value)}
        other = {**quota, "QuotaCode": "L-0000AAAA", "QuotaName": "ml.g5.2xlarge for endpoint usage"}
        quotas = self.stubs["quotas"]
        if applied:
            quotas.add_response("list_service_quotas", {"Quotas": [other], "NextToken": "page2"},
                                expected_params={"ServiceCode": "sagemaker"})
            quotas.add_response("list_service_quotas", {"Quotas": [quota]},
                                expected_params={"ServiceCode": "sagemaker", "NextToken": "page2"})
        else:
            quotas.add_response("list_service_quotas", {"Quotas": [other]},
                                expected_params={"ServiceCode": "sagemaker"})
            quotas.add_response("list_aws_default_service_quotas", {"Quotas": [quota]},
                                expected_params={"ServiceCode": "sagemaker"})
        sagemaker = self.stubs["sagemaker"]
        now = datetime.datetime(2026, 11, 1)
        endpoints = [{"EndpointName": "maas-embeddings-dev", "EndpointArn": "arn:aws:sagemaker:x:1:endpoint/a",
                      "CreationTime": now, "LastModifiedTime": now, "EndpointStatus": "InService"}]
        if used_elsewhere:
            endpoints.append({**endpoints[0], "EndpointName": "someone-else"})
        sagemaker.add_response("list_endpoints", {"Endpoints": endpoints})
        if used_elsewhere:
            sagemaker.add_response("describe_endpoint", {
                "EndpointName": "someone-else", "EndpointArn": "arn:aws:sagemaker:x:1:endpoint/b",
                "EndpointConfigName": "their-config", "EndpointStatus": "InService", "CreationTime": now,
                "LastModifiedTime": now,
                "ProductionVariants": [{"VariantName": "v1", "CurrentInstanceCount": used_elsewhere}]},
                expected_params={"EndpointName": "someone-else"})
            sagemaker.add_response("describe_endpoint_config", {
                "EndpointConfigName": "their-config", "EndpointConfigArn": "arn:aws:sagemaker:x:1:endpoint-config/c",
                "CreationTime": now, "ProductionVariants": [{"VariantName": "v1", "ModelName": "m",
                                                             "InstanceType": "ml.g5.xlarge"}]},
                expected_params={"EndpointConfigName": "their-config"})

    def pepper(self, kind: str | None = "SecureString") -> None:
        params = {"Name": "/maas/dev/key-pepper", "WithDecryption": False}
        if kind is None:
            self.stubs["ssm"].add_client_error("get_parameter", "ParameterNotFound", expected_params=params)
        else:
            self.stubs["ssm"].add_response("get_parameter", {"Parameter": {
                "Name": "/maas/dev/key-pepper", "Type": kind, "Value": "***", "Version": 1}}, expected_params=params)

    def image(self, present: bool = True, caller: str = ACCOUNT) -> None:
        self.stubs["sts"].add_response("get_caller_identity", {"Account": caller, "Arn": "arn:aws:iam::1:user/x",
                                                               "UserId": "AIDA"})
        if caller != ACCOUNT:
            return
        params = {"repositoryName": "maas-inference", "imageIds": [{"imageTag": "abc123"}], "registryId": ACCOUNT}
        if present:
            self.stubs["ecr"].add_response("describe_images", {"imageDetails": [{
                "registryId": ACCOUNT, "repositoryName": "maas-inference", "imageDigest": DIGEST,
                "imageSizeInBytes": 4_200_000_000, "imagePushedAt": datetime.datetime(2026, 11, 28)}]},
                expected_params=params)
        else:
            self.stubs["ecr"].add_client_error("describe_images", "ImageNotFoundException", expected_params=params)

    def run(self, deploy: DeployPlan) -> tuple[int, str]:
        with ExitStack() as stack:
            for stub in self.stubs.values():
                stack.enter_context(stub)
            out = io.StringIO()
            code = report(run_checks(deploy, self.clients), out)
            for stub in self.stubs.values():
                stub.assert_no_pending_responses()
        return code, out.getvalue()


@pytest.fixture
def account() -> Iterator[Account]:
    yield Account()


def test_a_ready_account_passes(account):
    account.concurrency(quota=1000, unreserved=1000)
    account.gpu_quota(value=4)
    account.pepper()
    account.image()
    code, out = account.run(plan())
    assert code == 0, out
    assert out.count("PASS") == 4 and "FAIL" not in out
    assert "preflight: 0 blocker(s), 0 warning(s)" in out


def test_a_fresh_account_is_told_what_to_request(account):
    # GIVEN a new account: concurrency 10, no GPU endpoint quota, no pepper, no image yet,
    # and prod's reservations
    account.concurrency(quota=10, unreserved=10)
    account.gpu_quota(value=0, applied=False)
    account.pepper(kind=None)
    account.image(present=False)
    code, out = account.run(plan(reserved={"InvokeFunction": 500, "FlusherFunction": 1}))
    # THEN every blocker is named with the command that lifts it, and the exit code is 1
    assert code == 1
    assert "FAIL  lambda reserved concurrency: the stack reserves 501" in out
    assert "--service-code lambda --quota-code L-B99A9384 --desired-value 1000" in out
    assert "WARN  lambda concurrency quota" in out
    assert "FAIL  sagemaker endpoint instances: 'ml.g5.xlarge for endpoint usage' is 0" in out
    assert "--service-code sagemaker --quota-code L-1234ABCD --desired-value 4" in out
    assert "FAIL  key pepper in SSM: /maas/dev/key-pepper does not exist" in out
    assert "aws ssm put-parameter --name /maas/dev/key-pepper --type SecureString" in out
    assert "FAIL  inference image in ECR" in out and "ImageNotFoundException" in out
    assert "preflight: 4 blocker(s), 1 warning(s)" in out


def test_without_reservations_a_small_quota_only_warns(account):
    account.concurrency(quota=10, unreserved=10)
    account.gpu_quota(value=1)
    account.pepper()
    account.image()
    code, out = account.run(plan())
    assert code == 0, out
    assert "PASS  lambda reserved concurrency: reserves 0" in out
    assert "WARN  sagemaker endpoint instances" in out and "autoscaling will stop short" in out


def test_a_redeploy_counts_its_own_reservations_as_free(account):
    # GIVEN prod deployed already (500 + 1 reserved of 1000): unreserved is 499
    account.concurrency(quota=1000, unreserved=499, stack={"InvokeFunction": 500, "FlusherFunction": 1})
    account.gpu_quota(value=8)
    account.pepper()
    account.image()
    code, out = account.run(plan(reserved={"InvokeFunction": 500, "FlusherFunction": 1}))
    assert code == 0, out
    assert "reserves 501; 499 of 1000 stay unreserved" in out


def test_instances_of_other_endpoints_count_against_the_quota(account):
    account.concurrency(quota=1000, unreserved=1000)
    account.gpu_quota(value=4, used_elsewhere=4)
    account.pepper()
    account.image()
    code, out = account.run(plan())
    assert code == 1
    assert "4 used by other endpoints: 0 free" in out


def test_an_image_in_another_account_is_a_blocker(account):
    account.concurrency(quota=1000, unreserved=1000)
    account.gpu_quota(value=4)
    account.pepper(kind="String")
    account.image(caller="999999999999")
    code, out = account.run(plan())
    assert code == 1
    assert "WARN  key pepper in SSM: /maas/dev/key-pepper is a String" in out
    assert "the image is in 123456789012/us-east-1, the stack in 999999999999/us-east-1" in out


def test_a_check_that_cannot_run_is_a_blocker(account):
    account.stubs["lambda_client"].add_client_error("get_account_settings", "AccessDeniedException")
    account.gpu_quota(value=4)
    account.pepper()
    account.image()
    code, out = account.run(plan())
    assert code == 1
    assert "FAIL  lambda reserved concurrency: could not check: AccessDeniedException" in out


# ------------------------------------------------------------------------ parameters and arguments


def test_parameters_resolve_as_sam_deploy_does():
    template = load_template(ROOT / "template.yaml")
    import tomllib

    samconfig = tomllib.loads((ROOT / "samconfig.toml").read_text())
    # GIVEN only the image on the command line THEN samconfig's overrides are replaced, not
    # merged (aws-sam-cli#2380): the template's defaults, a dev-sized "prod", and a blocker
    alone = parse_overrides([f"InferenceImageUri={IMAGE}"])
    replaced = resolve_parameters(template, samconfig, "prod", alone)
    assert replaced["Stage"] == "dev" and replaced["InvokeReservedConcurrency"] == "0"
    (check,) = check_overrides(samconfig, "prod", alone)
    assert check.status == "FAIL" and "Stage" in check.detail and "make deploy ENV=prod" in check.fix
    # GIVEN no command line THEN samconfig's; GIVEN the whole set THEN all of it
    assert resolve_parameters(template, samconfig, "prod", {})["Stage"] == "prod"
    whole = samconfig_overrides(samconfig, "prod") | alone
    assert check_overrides(samconfig, "prod", whole)[0].status == "PASS"
    prod = resolve_parameters(template, samconfig, "prod", whole)
    assert prod["Stage"] == "prod" and prod["InvokeReservedConcurrency"] == "500"
    assert prod["InferenceMaxInstances"] == "8" and prod["InferenceImageUri"] == IMAGE
    dev = resolve_parameters(template, samconfig, "default", {"InferenceMaxInstances": "2"})
    assert dev["InvokeReservedConcurrency"] == "0" and dev["InferenceMaxInstances"] == "2"
    deploy = DeployPlan.from_parameters(prod, stack_name="s", region=REGION)
    assert deploy.reserved == {"InvokeFunction": 500, "FlusherFunction": 10}  # FlushWorkersMax 8, and overlap
    assert deploy.pepper_parameter == "/maas/prod/key-pepper" and deploy.endpoint_name == "maas-embeddings-prod"


def test_overrides_parse_like_samconfig_writes_them():
    assert parse_overrides(['Stage="prod" InferenceMinInstances="2"', "A=b"]) == {
        "Stage": "prod", "InferenceMinInstances": "2", "A": "b"}
    with pytest.raises(ValueError):
        parse_overrides(["NoEquals"])


def test_command_line_reads_samconfig_and_the_template(tmp_path):
    samconfig = tmp_path / "samconfig.toml"
    samconfig.write_text('[prod.deploy.parameters]\nregion = "eu-west-1"\nparameter_overrides = "Stage=\\"prod\\""\n'
                         '[prod.global.parameters]\nstack_name = "maas-prod"\n')
    args = argparse.Namespace(samconfig=samconfig, template=ROOT / "template.yaml", config_env="prod",
                              parameter_overrides=[f"Stage=prod InferenceImageUri={IMAGE}"], region=None,
                              stack_name=None)
    deploy = plan_from_args(args, default_region=lambda: "us-west-2")
    assert (deploy.region, deploy.stack_name, deploy.stage, deploy.image_uri) == ("eu-west-1", "maas-prod", "prod",
                                                                                  IMAGE)
    args.region, args.stack_name = "ap-south-1", "other"
    assert (plan_from_args(args, default_region=lambda: None).region, "other") == ("ap-south-1", "other")


def test_command_is_registered_under_admin(capsys):
    with pytest.raises(SystemExit) as done:
        main(["admin", "preflight", "--help"])
    assert done.value.code == 0
    assert "--parameter-overrides" in capsys.readouterr().out


def test_command_runs_the_checks_and_exits_with_their_verdict(monkeypatch, account, tmp_path, capsys):
    import gateway.cli.preflight as preflight

    account.concurrency(quota=10, unreserved=10)
    account.gpu_quota(value=0)
    account.pepper()
    account.image()
    monkeypatch.setattr(preflight.Clients, "for_region", classmethod(lambda cls, region: account.clients))
    with ExitStack() as stack:
        for stub in account.stubs.values():
            stack.enter_context(stub)
        code = main(["admin", "preflight", "--samconfig", str(tmp_path / "none.toml"), "--template",
                     str(ROOT / "template.yaml"), "--region", REGION, "--parameter-overrides",
                     f"InferenceImageUri={IMAGE}"])
    out = capsys.readouterr().out
    assert code == 1, out
    assert out.startswith("preflight of maas-gateway-dev (stage dev) in us-east-1")
