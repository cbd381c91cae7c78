"""``maas admin deploy`` (what ``make deploy ENV=prod IMAGE=...`` runs): one deploy command that
deploys exactly the parameters preflight approved.

SAM CLI's ``--parameter-overrides`` replaces samconfig.toml's overrides instead of merging
with them (aws-sam-cli#2380), so ``sam deploy --config-env prod --parameter-overrides
InferenceImageUri=...`` would deploy a dev-sized stack. This command builds the whole set once
(samconfig's ``[ENV]`` overrides plus the image), runs preflight on that set, and hands the
same set to ``sam deploy``. The image URI (and so the account id) stays on the command line:
nothing is written to samconfig.toml. tests/unit/test_deploy.py feeds the command's arguments
to SAM CLI's own resolution (infra/sam_resolution.py)."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

from gateway.cli import admin, preflight


def deploy_overrides(samconfig: dict, config_env: str, image_uri: str) -> dict[str, str]:
    """samconfig's overrides for ``config_env`` and the image: the whole set, in one place."""
    return preflight.samconfig_overrides(samconfig, config_env) | {"InferenceImageUri": image_uri}


def format_overrides(overrides: dict[str, str]) -> str:
    """``Key="value" ...``, as samconfig.toml writes them (SAM reads both)."""
    for key, value in overrides.items():
        if '"' in value or "\\" in value:
            raise ValueError(f"parameter {key} has a quote or backslash, which SAM's parser cannot take")
    return " ".join(f'{key}="{value}"' for key, value in overrides.items())


def sam_deploy_args(config_env: str, overrides: dict[str, str]) -> list[str]:
    """The arguments after ``sam deploy``."""
    return ["--config-env", config_env, "--parameter-overrides", format_overrides(overrides)]


def register(commands: argparse._SubParsersAction) -> None:
    parser = admin.subcommands(commands).add_parser(
        "deploy", help="preflight, then sam deploy with the same, whole parameter set")
    parser.add_argument("--config-env", default="default", help="samconfig.toml environment (default: default)")
    parser.add_argument("--image", required=True, help="the inference image's ECR URI")
    parser.add_argument("--sam", default="sam", help="the sam command (make deploy passes .venv-sam's)")
    parser.add_argument("--dry-run", action="store_true", help="print the sam deploy command instead of running it")
    parser.add_argument("--region", help="default: samconfig's, else the AWS configuration's")
    parser.add_argument("--stack-name", help="default: samconfig's stack_name")
    parser.add_argument("--template", type=Path, default=Path("template.yaml"))
    parser.add_argument("--samconfig", type=Path, default=Path("samconfig.toml"))
    parser.set_defaults(run=_deploy)


def _deploy(args: argparse.Namespace) -> int:
    samconfig = preflight.load_samconfig(args.samconfig)
    overrides = deploy_overrides(samconfig, args.config_env, args.image)
    command = [args.sam, "deploy", *sam_deploy_args(args.config_env, overrides)]
    if args.region:
        command += ["--region", args.region]
    if args.stack_name:
        command += ["--stack-name", args.stack_name]
    if args.dry_run:
        print(subprocess.list2cmdline(command))
        return 0
    plan = preflight.plan_for(args, samconfig, overrides, preflight._default_region)
    print(f"preflight of {plan.stack_name} (stage {plan.stage}) in {plan.region}")
    checks = preflight.check_overrides(samconfig, args.config_env, overrides)
    if preflight.report(checks + preflight.run_checks(plan, preflight.Clients.for_region(plan.region))):
        return 1
    print(f"[maas] {subprocess.list2cmdline(command)}")
    return subprocess.run(command, check=False).returncode
