"""`make deploy ENV=prod IMAGE=...` deploys exactly the parameters preflight approved, shown by
SAM CLI's own resolution of the arguments (infra/sam_resolution.py, run in .venv-sam), not by
a copy of it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from gateway.cli import deploy, preflight
from infra.local.template import load_template

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/maas-inference:2026-12-07"


def sam_resolves(*args: str) -> dict:
    """What `sam deploy ARGS` would deploy with, by SAM CLI itself."""
    sam = Path(os.environ.get("MAAS_SAM") or ROOT / ".venv-sam" / "bin" / "sam")
    if not sam.exists():
        pytest.fail("aws-sam-cli is missing: make test installs it into .venv-sam")
    done = subprocess.run([str(sam.parent / "python"), str(ROOT / "infra" / "sam_resolution.py"), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def samconfig() -> dict:
    return tomllib.loads((ROOT / "samconfig.toml").read_text())


def test_sam_replaces_samconfigs_overrides_and_preflight_says_so(samconfig):
    # GIVEN the deploy the docs used to show: only the image on the command line
    resolved = sam_resolves("--config-env", "prod", "--parameter-overrides", f"InferenceImageUri={IMAGE}")
    # THEN SAM drops every parameter of samconfig's [prod] (aws-sam-cli#2380)
    assert resolved["parameter_overrides"] == {"InferenceImageUri": IMAGE}
    # AND preflight resolves the same parameters, and refuses them
    overrides = preflight.parse_overrides([f"InferenceImageUri={IMAGE}"])
    ours = preflight.resolve_parameters(load_template(), samconfig, "prod", overrides)
    assert ours["Stage"] == "dev"  # the template's default, as SAM would deploy
    assert preflight.check_overrides(samconfig, "prod", overrides)[0].status == "FAIL"


@pytest.mark.parametrize("config_env", ["prod", "default"])
def test_make_deploy_hands_sam_the_parameters_preflight_checked(samconfig, config_env):
    # GIVEN the whole set that `maas admin deploy` builds and checks
    overrides = deploy.deploy_overrides(samconfig, config_env, IMAGE)
    checked = preflight.resolve_parameters(load_template(), samconfig, config_env, overrides)
    assert preflight.check_overrides(samconfig, config_env, overrides)[0].status == "PASS"
    # WHEN SAM CLI resolves the very arguments the command passes to `sam deploy`
    resolved = sam_resolves(*deploy.sam_deploy_args(config_env, overrides))
    # THEN it deploys exactly that set: samconfig's parameters and the image, nothing dropped
    assert resolved["parameter_overrides"] == overrides
    assert resolved["config_env"] == config_env
    assert {k: checked[k] for k in resolved["parameter_overrides"]} == resolved["parameter_overrides"]
    if config_env == "prod":
        assert (checked["Stage"], checked["InvokeReservedConcurrency"], checked["InferenceImageUri"]) == (
            "prod", "500", IMAGE)


def test_the_deploy_command_runs_sam_with_those_arguments(capsys):
    from gateway.cli import main

    assert main(["admin", "deploy", "--config-env", "prod", "--image", IMAGE, "--dry-run", "--sam", "sam"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed.startswith("sam deploy --config-env prod --parameter-overrides ")
    assert "InferenceImageUri=" in printed and 'Stage=\\"prod\\"' in printed


def test_no_account_id_in_samconfig():
    # The image URI (and its account id) is passed on the command line; never written down.
    assert not re.search(r"\b\d{12}\b", (ROOT / "samconfig.toml").read_text())
    assert "--save-params" not in deploy.sam_deploy_args("prod", {"A": "b"})


def test_a_value_sam_cannot_parse_is_refused():
    with pytest.raises(ValueError):
        deploy.format_overrides({"Stage": 'pr"od'})
