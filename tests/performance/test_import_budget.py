"""The cold-start budget, guarded by what gets imported (deterministic), not by a timer:
the invoke handler must not pull in anything the hot path does not use. The timing itself
is a benchmark: `make bench-gateway` (cold import vs `import boto3`, goal <= 2.0x)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NEVER_ON_THE_HOT_PATH = ["torch", "onnxruntime", "numpy", "sentence_transformers", "transformers", "rich",
                         "argparse", "yaml", "moto", "pydantic_settings", "starlette", "uvicorn", "openai"]
# Loaded when the container builds its clients at the first request, not at import.
# (Powertools itself imports the bare `botocore` package, not its client machinery.)
LOADED_LAZILY = ["boto3", "botocore.session", "botocore.client", "redis", "tokenizers", "urllib3"]


def imported_by(module_dir: str) -> set[str]:
    code = (
        "import sys, json; sys.path.insert(0, '.'); import app; "
        "print(json.dumps(sorted(set(sys.modules) | {m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "functions" / module_dir,
                         capture_output=True, text=True, check=True, env={"PATH": "", "PYTHONPATH": str(ROOT)})
    return set(json.loads(out.stdout.splitlines()[-1]))


@pytest.mark.parametrize("function", ["invoke", "billing", "reports", "console"])
def test_handlers_import_nothing_heavy(function):
    assert sorted(imported_by(function) & set(NEVER_ON_THE_HOT_PATH)) == []


def test_invoke_handler_defers_its_clients_to_the_first_request():
    assert sorted(imported_by("invoke") & set(LOADED_LAZILY)) == []
