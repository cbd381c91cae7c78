"""What `sam build` produced (make test runs `make sam-build` first): the shared layer holds
the gateway package with its scripts and dependencies built for the functions' runtime
(Python 3.12, arm64), and every function's code is its thin entry module."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.local.template import load_template

BUILD = Path(__file__).resolve().parents[2] / ".aws-sam" / "build"


@pytest.fixture(scope="module")
def build() -> Path:
    if not (BUILD / "template.yaml").exists():
        pytest.fail("no .aws-sam/build: run `make sam-build` (make test does)")
    return BUILD


def test_layer_holds_the_gateway_and_its_scripts(build):
    python = build / "GatewayLayer" / "python"
    assert (python / "gateway" / "lua" / "admit.lua").exists()
    assert (python / "gateway" / "assets" / "all-MiniLM-L6-v2.tokenizer.json").exists()
    assert (python / "aws_lambda_powertools").is_dir() and (python / "redis").is_dir()


def test_layer_native_code_targets_the_lambda_runtime(build):
    python = build / "GatewayLayer" / "python"
    natives = [p.name for p in python.rglob("*.so")]
    assert any("cpython-312-aarch64" in name for name in natives if name.startswith("_pydantic_core"))
    assert not [name for name in natives if "x86_64" in name or "cpython-311" in name]
    assert not (python / "torch").exists() and not (python / "onnxruntime").exists()


def test_each_function_is_its_entry_module(build):
    template = load_template()
    for name, resource in template["Resources"].items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        assert (build / name / "app.py").exists(), name


def test_console_holds_its_site_and_bundled_libraries(build):
    # GIVEN functions/console/Makefile (BuildMethod: makefile) THEN the same files as locally:
    # the static site with the npm libraries copied in, and nothing of the build's inputs
    console = build / "ConsoleFunction"
    assert (console / "site" / "index.html").exists()
    assert (console / "site" / "vendor" / "chart.umd.min.js").stat().st_size > 100_000
    assert not (console / "node_modules").exists() and not (console / "package.json").exists()


def test_layer_leaves_the_sdk_to_the_runtime(build):
    # The Lambda runtime provides boto3/botocore: the layer without them is about 11 MB zipped
    # instead of 29 (docs/OPERATIONS.md, "The layer"). Only the layer's own directory is built.
    python = build / "GatewayLayer" / "python"
    assert not (python / "botocore").exists() and not (python / "boto3").exists()
    assert not (python / "s3transfer").exists()
    assert not any((python / name).exists() for name in ("tests", "infra", "inference_image", ".venv"))
