"""What ships, run as Lambda runs it: the layer built by the Makefile's `build-GatewayLayer`
recipe (as `sam build` does, for this machine's architecture), each function's CodeUri copied
as `sam build` copies it, and a Python 3.12 holding nothing but boto3 (the runtime's SDK).

A handler then runs in a process of its own whose path is exactly `CodeUri : layer/python :
boto3`, so a module the artifact lacks fails here whatever the source tree holds.
`ArtifactHandler` is called like the handler itself: `handler(event, context)`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from infra.local.template import load_template

ROOT = Path(__file__).resolve().parents[1]
# Lambda's python3.12 runtime ships boto3 and botocore; the layer leaves them out (Makefile).
RUNTIME_PACKAGES = ("boto3",)

# Runs inside the artifact's interpreter: imports `app` from the CodeUri, builds every client its
# container offers, then answers one JSON line per event on stdin.
DRIVER = r"""
import functools, json, sys, time, traceback
built, failed = [], {}
import app
container = getattr(app, "container", None)
if container is not None:
    for name, attr in vars(type(container)).items():
        if isinstance(attr, functools.cached_property):
            try:
                getattr(container, name)
                built.append(name)
            except Exception as exc:
                failed[name] = f"{type(exc).__name__}: {exc}"

class Context:
    def __init__(self, spec):
        self.function_name = spec["function_name"]
        self.function_version = "$LATEST"
        self.invoked_function_arn = spec["arn"]
        self.memory_limit_in_mb = spec["memory_mb"]
        self.aws_request_id = spec["request_id"]
        self.log_group_name = "/aws/lambda/" + spec["function_name"]
        self.log_stream_name = "artifact"
        self.identity = self.client_context = None
        self._deadline = time.monotonic() + spec["timeout_s"]
    def get_remaining_time_in_millis(self):
        return max(0, int((self._deadline - time.monotonic()) * 1000))

MARK = sys.argv[1]  # before each answer: the handler's own logs and metrics share stdout
print(MARK + json.dumps({"built": built, "failed": failed,
                  "modules": sorted(m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None))}),
      flush=True)
for line in sys.stdin:
    call = json.loads(line)
    try:
        answer = {"result": app.handler(call["event"], Context(call["context"]))}
    except Exception:
        answer = {"error": traceback.format_exc()}
    print(MARK + json.dumps(answer, default=str), flush=True)
"""
MARK = "@@artifact@@ "  # the driver's argument


class ArtifactError(AssertionError):
    """The artifact could not import, build a client, or serve an event."""


def function_code_uris() -> dict[str, str]:
    """Logical id -> CodeUri directory name, for every function of the template."""
    template = load_template()
    return {name: Path(r["Properties"]["CodeUri"]).name for name, r in template["Resources"].items()
            if r["Type"] == "AWS::Serverless::Function"}


def build_layer(into: Path, log: Path) -> Path:
    """The layer as `sam build` builds it: a scratch copy of layers/gateway/ (links followed),
    then the Makefile's recipe in it, for this machine's architecture. Returns layer/python."""
    source = into / "source"
    shutil.copytree(ROOT / "layers" / "gateway", source, symlinks=False,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    artifacts = into / "layer"
    with log.open("w") as out:
        done = subprocess.run(
            ["make", "-f", str(ROOT / "Makefile"), "build-GatewayLayer", f"ARTIFACTS_DIR={artifacts}",
             f"LAYER_ARCH={os.uname().machine}", f"PYTHON={sys.executable}"],
            cwd=source, stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode:
        raise ArtifactError(f"build-GatewayLayer failed:\n{log.read_text()[-3000:]}")
    return artifacts / "python"


def find_python312() -> str | None:
    """The functions' runtime version, found as the Makefile finds it (pyenv's shim may not run)."""
    candidates = [os.environ.get("MAAS_PY312"), shutil.which("python3.12"),
                  *sorted(str(p) for p in Path(os.path.expanduser("~/.pyenv/versions")).glob("3.12*/bin/python3.12"))]
    for candidate in filter(None, candidates):
        if subprocess.run([candidate, "--version"], capture_output=True, check=False).returncode == 0:
            return candidate
    return None


def runtime_python(python312: str, venv: Path) -> Path:
    """A Python 3.12 with only the runtime's SDK (kept between runs: it never changes)."""
    python = venv / "bin" / "python"
    if not (venv / ".ready").exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([python312, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        *RUNTIME_PACKAGES], check=True)
        (venv / ".ready").touch()
    return python


class Artifact:
    """The built layer, the CodeUris and the runtime interpreter."""

    def __init__(self, python: Path, layer: Path, workdir: Path) -> None:
        self.python, self.layer, self.workdir = python, layer, workdir

    def handler(self, function_dir: str) -> ArtifactHandler:
        return ArtifactHandler(self, function_dir)


class ArtifactHandler:
    """One function of the artifact in its own process: `handler(event, context)` as in Lambda.
    The process starts on the first call, with the environment the test has set by then."""

    def __init__(self, artifact: Artifact, function_dir: str) -> None:
        self.artifact, self.function_dir = artifact, function_dir
        self.proc: subprocess.Popen[str] | None = None
        self.report: dict[str, Any] = {}
        self.stderr = artifact.workdir / f"{function_dir}.stderr"

    def start(self) -> dict[str, Any]:
        """Starts the process; returns what it imported and which clients it built."""
        code = self.artifact.workdir / "functions" / self.function_dir
        if not code.exists():  # sam build copies the CodeUri as it is (no requirements.txt)
            shutil.copytree(ROOT / "functions" / self.function_dir, code,
                            ignore=shutil.ignore_patterns("__pycache__", "node_modules", "*.pyc"))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        env |= {"PYTHONPATH": f"{code}{os.pathsep}{self.artifact.layer}", "PYTHONNOUSERSITE": "1",
                "PYTHONDONTWRITEBYTECODE": "1"}
        empty = self.artifact.workdir / "cwd"
        empty.mkdir(exist_ok=True)
        # -c with an empty working directory: nothing but PYTHONPATH and the venv is importable.
        self.stderr = self.artifact.workdir / f"{self.function_dir}.stderr"
        with self.stderr.open("w") as err:
            self.proc = subprocess.Popen([str(self.artifact.python), "-c", DRIVER, MARK], cwd=empty, env=env,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True)
        first = self._answer()
        if not first:
            raise ArtifactError(f"functions/{self.function_dir} did not import from the artifact:\n"
                                f"{self.stop()[-4000:]}")
        self.report = json.loads(first)
        return self.report

    def _answer(self) -> str:
        """The driver's next answer, past whatever the handler printed; "" when it died."""
        assert self.proc is not None and self.proc.stdout
        for line in self.proc.stdout:
            if line.startswith(MARK):
                return line[len(MARK):]
        return ""

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        if self.proc is None:
            self.start()
        assert self.proc is not None and self.proc.stdin and self.proc.stdout
        spec = {"function_name": context.function_name, "arn": context.invoked_function_arn,
                "memory_mb": context.memory_limit_in_mb, "request_id": context.aws_request_id,
                "timeout_s": context.get_remaining_time_in_millis() / 1000}
        self.proc.stdin.write(json.dumps({"event": event, "context": spec}) + "\n")
        self.proc.stdin.flush()
        line = self._answer()
        if not line:
            raise ArtifactError(f"functions/{self.function_dir} died:\n{self.stop()[-4000:]}")
        answer = json.loads(line)
        if "error" in answer:
            raise ArtifactError(f"functions/{self.function_dir} raised:\n{answer['error']}")
        return answer["result"]

    def stop(self) -> str:
        """Ends the process; returns its stderr."""
        if self.proc is None:
            return ""
        proc, self.proc = self.proc, None
        try:
            proc.communicate(timeout=30)  # closes stdin: the driver's loop ends
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        return self.stderr.read_text()
