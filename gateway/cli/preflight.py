"""``maas admin preflight``: what would make ``sam deploy`` roll back, checked before it runs.

A new account differs from the one a template is written in: its Lambda concurrency quota is
often 10 (no reservation fits), its SageMaker quota for GPU endpoint instances is usually 0,
and the SSM pepper and the ECR image exist only once someone made them. Each check prints
PASS, WARN or FAIL with what to do; any FAIL exits 1.

The deploy's parameters are resolved as ``sam deploy`` resolves them: the template's defaults,
then EITHER ``--parameter-overrides`` OR, when none is given, samconfig.toml's
``parameter_overrides`` for ``--config-env``: the command line replaces samconfig's, it does
not merge with them (aws-sam-cli#2380). A command line that drops samconfig's parameters is
a blocker (``make deploy`` passes the whole set: gateway/cli/deploy.py). Calls: Lambda
GetAccountSettings and GetFunctionConcurrency,
CloudFormation DescribeStackResource, Service Quotas, SageMaker ListEndpoints /
DescribeEndpoint / DescribeEndpointConfig, SSM GetParameter (never decrypted), STS
GetCallerIdentity, ECR DescribeImages.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gateway.cli import admin

LAMBDA_CONCURRENCY_QUOTA = "L-B99A9384"  # Lambda "Concurrent executions"
LAMBDA_MIN_UNRESERVED = 100  # Lambda keeps this much unreserved (all of it below 100)
RESERVATIONS = {"InvokeFunction": "InvokeReservedConcurrency", "FlusherFunction": "FlusherReservedConcurrency"}
IMAGE_URI = re.compile(r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/"
                       r"(?P<repository>[a-z0-9._/-]+)(?::(?P<tag>[A-Za-z0-9._-]+)|@(?P<digest>sha256:[a-f0-9]{64}))$")

Status = Literal["PASS", "WARN", "FAIL"]


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class DeployPlan:
    """What the deploy will ask of the account, from the resolved parameters."""

    stack_name: str
    region: str
    stage: str
    image_uri: str
    instance_type: str
    min_instances: int
    max_instances: int
    reserved: dict[str, int]  # function logical id -> reserved concurrency (0 = none)

    @classmethod
    def from_parameters(cls, parameters: dict[str, str], *, stack_name: str, region: str) -> DeployPlan:
        return cls(stack_name=stack_name, region=region, stage=parameters.get("Stage", "dev"),
                   image_uri=parameters.get("InferenceImageUri", ""),
                   instance_type=parameters.get("InferenceInstanceType", "ml.g5.xlarge"),
                   min_instances=int(parameters.get("InferenceMinInstances", 1)),
                   max_instances=int(parameters.get("InferenceMaxInstances", 1)),
                   reserved={fn: int(parameters.get(param, 0)) for fn, param in RESERVATIONS.items()})

    @property
    def pepper_parameter(self) -> str:
        return f"/maas/{self.stage}/key-pepper"

    @property
    def endpoint_name(self) -> str:
        return f"maas-embeddings-{self.stage}"


# -- parameters, as sam deploy resolves them ---------------------------------------------------
def parse_overrides(values: Iterable[str]) -> dict[str, str]:
    """``Key=Value`` items (quotes allowed, as samconfig.toml writes them)."""
    parsed = {}
    for item in values:
        for token in shlex.split(item):
            key, sep, value = token.partition("=")
            if not sep or not key:
                raise ValueError(f"not Key=Value: {token!r}")
            parsed[key] = value
    return parsed


def samconfig_overrides(samconfig: dict[str, Any], config_env: str) -> dict[str, str]:
    deploy = samconfig.get(config_env, {}).get("deploy", {}).get("parameters", {})
    return parse_overrides([deploy.get("parameter_overrides", "")])


def resolve_parameters(template: dict[str, Any], samconfig: dict[str, Any], config_env: str,
                       overrides: dict[str, str]) -> dict[str, str]:
    """The template's defaults, then the command line's overrides if any, else samconfig's:
    replaced, not merged, as SAM CLI does (tests/unit/test_deploy.py drives SAM CLI to show it)."""
    resolved = {name: str(spec["Default"]) for name, spec in template.get("Parameters", {}).items()
                if "Default" in spec}
    resolved.update(overrides or samconfig_overrides(samconfig, config_env))
    return resolved


def check_overrides(samconfig: dict[str, Any], config_env: str, overrides: dict[str, str]) -> list[Check]:
    """A command line that leaves out samconfig's parameters deploys without them."""
    dropped = sorted(set(samconfig_overrides(samconfig, config_env)) - set(overrides)) if overrides else []
    if dropped:
        return [Check("parameters", "FAIL",
                      f"--parameter-overrides replaces samconfig's [{config_env}] parameter_overrides: "
                      f"sam deploy would drop {', '.join(dropped)}",
                      f"make deploy ENV={config_env} IMAGE=<image uri> (passes the whole set)")]
    source = "the command line" if overrides else f"samconfig.toml [{config_env}]"
    return [Check("parameters", "PASS", f"from {source}")]


def samconfig_value(samconfig: dict[str, Any], config_env: str, key: str) -> str | None:
    env = samconfig.get(config_env, {})
    for section in ("deploy", "global"):
        value = env.get(section, {}).get("parameters", {}).get(key)
        if value:
            return str(value)
    return None


# -- the checks -------------------------------------------------------------------------------
def _error_code(error: Exception) -> str:
    return getattr(error, "response", {}).get("Error", {}).get("Code", type(error).__name__)


def current_reservations(plan: DeployPlan, cloudformation: Any, lambda_client: Any) -> dict[str, int]:
    """What this stack's functions reserve today (a redeploy frees it before reserving again)."""
    found: dict[str, int] = {}
    for logical_id in RESERVATIONS:
        try:
            resource = cloudformation.describe_stack_resource(StackName=plan.stack_name, LogicalResourceId=logical_id)
        except Exception as error:  # no stack yet, or no such resource: nothing reserved
            if _error_code(error) != "ValidationError":
                raise
            continue
        name = resource["StackResourceDetail"]["PhysicalResourceId"]
        reply = lambda_client.get_function_concurrency(FunctionName=name)
        found[logical_id] = int(reply.get("ReservedConcurrentExecutions") or 0)
    return found


def check_lambda_concurrency(plan: DeployPlan, lambda_client: Any, cloudformation: Any) -> list[Check]:
    limits = lambda_client.get_account_settings()["AccountLimit"]
    quota, unreserved = int(limits["ConcurrentExecutions"]), int(limits["UnreservedConcurrentExecutions"])
    freed = current_reservations(plan, cloudformation, lambda_client)
    wanted = sum(plan.reserved.values())
    left = unreserved + sum(freed.values()) - wanted
    minimum = min(LAMBDA_MIN_UNRESERVED, quota)
    request = (f"aws service-quotas request-service-quota-increase --service-code lambda "
               f"--quota-code {LAMBDA_CONCURRENCY_QUOTA} --desired-value {max(1000, wanted + LAMBDA_MIN_UNRESERVED)}")
    checks = []
    if wanted and left < minimum:
        checks.append(Check("lambda reserved concurrency", "FAIL",
                            f"the stack reserves {wanted} ({_describe(plan.reserved)}) but only "
                            f"{unreserved + sum(freed.values())} of the account's {quota} can be reserved "
                            f"while {minimum} stay unreserved",
                            f"{request}, or deploy with InvokeReservedConcurrency=0 FlusherReservedConcurrency=0"))
    else:
        checks.append(Check("lambda reserved concurrency", "PASS",
                            f"reserves {wanted}; {left} of {quota} stay unreserved (minimum {minimum})"))
    if quota < 1000:
        checks.append(Check("lambda concurrency quota", "WARN",
                            f"the account runs at most {quota} functions at once in {plan.region}; "
                            "traffic above that is throttled (429)", request))
    return checks


def _describe(reserved: dict[str, int]) -> str:
    return ", ".join(f"{fn} {n}" for fn, n in reserved.items() if n) or "none"


def _paged(method: Callable[..., dict], key: str, **kwargs: Any) -> Iterable[dict]:
    token = None
    while True:
        reply = method(**kwargs, **({"NextToken": token} if token else {}))
        yield from reply.get(key, [])
        token = reply.get("NextToken")
        if not token:
            return


def endpoint_quota(quotas: Any, instance_type: str) -> tuple[str, int] | None:
    """(quota code, value) of "<instance type> for endpoint usage", applied value first."""
    name = f"{instance_type} for endpoint usage"
    for method in (quotas.list_service_quotas, quotas.list_aws_default_service_quotas):
        for quota in _paged(method, "Quotas", ServiceCode="sagemaker"):
            if quota.get("QuotaName") == name:
                return quota["QuotaCode"], int(quota["Value"])
    return None


def instances_in_use(sagemaker: Any, instance_type: str, *, excluding: str) -> int:
    """Instances of this type that other endpoints of the account hold (the quota is shared)."""
    used = 0
    for endpoint in _paged(sagemaker.list_endpoints, "Endpoints"):
        if endpoint["EndpointName"] == excluding:
            continue
        described = sagemaker.describe_endpoint(EndpointName=endpoint["EndpointName"])
        config = sagemaker.describe_endpoint_config(EndpointConfigName=described["EndpointConfigName"])
        types = {v["VariantName"]: v.get("InstanceType") for v in config["ProductionVariants"]}
        for variant in described.get("ProductionVariants", []):
            if types.get(variant["VariantName"]) == instance_type:
                used += int(variant.get("CurrentInstanceCount") or 0)
    return used


def check_sagemaker_quota(plan: DeployPlan, quotas: Any, sagemaker: Any) -> list[Check]:
    name = "sagemaker endpoint instances"
    found = endpoint_quota(quotas, plan.instance_type)
    if found is None:
        return [Check(name, "FAIL", f"no quota named '{plan.instance_type} for endpoint usage' in {plan.region}: "
                      "the instance type is not offered for real-time endpoints here",
                      "choose another InferenceInstanceType (aws service-quotas list-service-quotas "
                      "--service-code sagemaker)")]
    code, value = found
    used = instances_in_use(sagemaker, plan.instance_type, excluding=plan.endpoint_name)
    free = value - used
    request = (f"aws service-quotas request-service-quota-increase --service-code sagemaker --quota-code {code} "
               f"--desired-value {used + plan.max_instances}")
    detail = (f"'{plan.instance_type} for endpoint usage' is {value} in {plan.region}, {used} used by other "
              f"endpoints: {free} free for {plan.min_instances} (up to {plan.max_instances} with autoscaling)")
    if free < plan.min_instances:
        return [Check(name, "FAIL", detail, request)]
    if free < plan.max_instances:
        return [Check(name, "WARN", detail + "; autoscaling will stop short", request)]
    return [Check(name, "PASS", detail)]


def check_pepper(plan: DeployPlan, ssm: Any) -> list[Check]:
    name = "key pepper in SSM"
    create = (f"aws ssm put-parameter --name {plan.pepper_parameter} --type SecureString "
              "--value \"$(openssl rand -hex 32)\"")
    try:
        parameter = ssm.get_parameter(Name=plan.pepper_parameter, WithDecryption=False)["Parameter"]
    except Exception as error:
        if _error_code(error) == "ParameterNotFound":
            return [Check(name, "FAIL", f"{plan.pepper_parameter} does not exist: every key check would fail", create)]
        raise
    if parameter.get("Type") != "SecureString":
        return [Check(name, "WARN", f"{plan.pepper_parameter} is a {parameter.get('Type')}, not a SecureString",
                      "recreate it as a SecureString (docs/OPERATIONS.md, Rotating the pepper)")]
    return [Check(name, "PASS", f"{plan.pepper_parameter} (SecureString, version {parameter.get('Version')})")]


def check_image(plan: DeployPlan, ecr: Any, sts: Any) -> list[Check]:
    name = "inference image in ECR"
    match = IMAGE_URI.match(plan.image_uri)
    if not match:
        return [Check(name, "FAIL", f"InferenceImageUri {plan.image_uri!r} is not an ECR image URI",
                      "--parameter-overrides InferenceImageUri=<account>.dkr.ecr.<region>.amazonaws.com/<repo>:<tag>")]
    account = sts.get_caller_identity()["Account"]
    if (match["account"], match["region"]) != (account, plan.region):
        return [Check(name, "FAIL", f"the image is in {match['account']}/{match['region']}, the stack in "
                      f"{account}/{plan.region}: the endpoint may pull only from its own account's repository",
                      "push the image to this account's ECR in this Region (docs/OPERATIONS.md)")]
    image_id = {"imageTag": match["tag"]} if match["tag"] else {"imageDigest": match["digest"]}
    try:
        reply = ecr.describe_images(repositoryName=match["repository"], imageIds=[image_id], registryId=account)
    except Exception as error:
        if _error_code(error) in ("ImageNotFoundException", "RepositoryNotFoundException"):
            return [Check(name, "FAIL", f"{plan.image_uri} is not in ECR ({_error_code(error)})",
                          "build and push it (docs/OPERATIONS.md, First deploy, step 3)")]
        raise
    (image,) = reply["imageDetails"]
    size_mb = int(image.get("imageSizeInBytes", 0)) / 1e6
    return [Check(name, "PASS", f"{match['repository']}@{image['imageDigest'][:19]}… ({size_mb:.0f} MB, pushed "
                  f"{image.get('imagePushedAt')})")]


# -- running them ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Clients:
    lambda_client: Any
    cloudformation: Any
    quotas: Any
    sagemaker: Any
    ssm: Any
    ecr: Any
    sts: Any

    @classmethod
    def for_region(cls, region: str) -> Clients:
        import boto3

        session = boto3.session.Session(region_name=region)
        return cls(*(session.client(service) for service in
                     ("lambda", "cloudformation", "service-quotas", "sagemaker", "ssm", "ecr", "sts")))


def run_checks(plan: DeployPlan, clients: Clients) -> list[Check]:
    checks: list[Check] = []
    for name, run in (
        ("lambda reserved concurrency", lambda: check_lambda_concurrency(plan, clients.lambda_client,
                                                                         clients.cloudformation)),
        ("sagemaker endpoint instances", lambda: check_sagemaker_quota(plan, clients.quotas, clients.sagemaker)),
        ("key pepper in SSM", lambda: check_pepper(plan, clients.ssm)),
        ("inference image in ECR", lambda: check_image(plan, clients.ecr, clients.sts)),
    ):
        try:
            checks += run()
        except Exception as error:  # a check that cannot run is a blocker, said as such
            checks.append(Check(name, "FAIL", f"could not check: {_error_code(error)}: {error}",
                                "check the credentials' permissions and the Region"))
    return checks


def report(checks: list[Check], out: Any = sys.stdout) -> int:
    for check in checks:
        print(f"{check.status}  {check.name}: {check.detail}", file=out)
        if check.fix and check.status != "PASS":
            print(f"      fix: {check.fix}", file=out)
    failed = sum(c.status == "FAIL" for c in checks)
    print(f"preflight: {failed} blocker(s), {sum(c.status == 'WARN' for c in checks)} warning(s)", file=out)
    return 1 if failed else 0


def register(commands: argparse._SubParsersAction) -> None:
    parser = admin.subcommands(commands).add_parser(
        "preflight", help="check the account can take `sam deploy` (exit 1 on a blocker)")
    parser.add_argument("--config-env", default="default", help="samconfig.toml environment (default: default)")
    parser.add_argument("--parameter-overrides", nargs="+", default=[], metavar="KEY=VALUE",
                        help="as for sam deploy, e.g. InferenceImageUri=...")
    parser.add_argument("--region", help="default: samconfig's, else the AWS configuration's")
    parser.add_argument("--stack-name", help="default: samconfig's stack_name")
    parser.add_argument("--template", type=Path, default=Path("template.yaml"))
    parser.add_argument("--samconfig", type=Path, default=Path("samconfig.toml"))
    parser.set_defaults(run=_preflight)


def plan_from_args(args: argparse.Namespace, default_region: Callable[[], str | None]) -> DeployPlan:
    samconfig = load_samconfig(args.samconfig)
    return plan_for(args, samconfig, parse_overrides(args.parameter_overrides), default_region)


def load_samconfig(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text()) if path.exists() else {}


def plan_for(args: argparse.Namespace, samconfig: dict[str, Any], overrides: dict[str, str],
             default_region: Callable[[], str | None]) -> DeployPlan:
    from gateway.cli.template import load_template

    parameters = resolve_parameters(load_template(args.template), samconfig, args.config_env, overrides)
    region = args.region or samconfig_value(samconfig, args.config_env, "region") or default_region()
    if not region:
        raise SystemExit("maas: no Region: pass --region or configure one (AWS_REGION)")
    stack_name = args.stack_name or samconfig_value(samconfig, args.config_env, "stack_name") or \
        f"maas-gateway-{parameters.get('Stage', 'dev')}"
    return DeployPlan.from_parameters(parameters, stack_name=stack_name, region=region)


def _default_region() -> str | None:
    import boto3

    return boto3.session.Session().region_name


def _preflight(args: argparse.Namespace) -> int:
    samconfig, overrides = load_samconfig(args.samconfig), parse_overrides(args.parameter_overrides)
    plan = plan_for(args, samconfig, overrides, _default_region)
    print(f"preflight of {plan.stack_name} (stage {plan.stage}) in {plan.region}")
    checks = check_overrides(samconfig, args.config_env, overrides)
    return report(checks + run_checks(plan, Clients.for_region(plan.region)))
