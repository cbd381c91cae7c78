"""The layer's package (layers/gateway/pyproject.toml) lists every package of gateway/ and its
data files as the repository's own package does: a package added to gateway/ and not to the
layer would be missing in AWS (tests/functional/test_artifact.py proves what the built layer
imports; this says why, before a build)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYER = ROOT / "layers" / "gateway"


def _toml(path: Path) -> dict:
    return tomllib.loads(path.read_text())


def test_the_layer_lists_every_package_of_the_gateway():
    listed = _toml(LAYER / "pyproject.toml")["tool"]["setuptools"]["packages"]
    found = sorted(".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "gateway").rglob("__init__.py"))
    assert sorted(listed) == found


def test_the_layer_ships_the_same_data_files_and_dependencies_as_the_repository():
    layer, repo = _toml(LAYER / "pyproject.toml"), _toml(ROOT / "pyproject.toml")
    data = [toml["tool"]["setuptools"]["package-data"]["gateway"] for toml in (layer, repo)]
    assert data[0] == data[1]
    # one dependency list, read by both
    assert repo["tool"]["setuptools"]["dynamic"]["dependencies"]["file"] == ["layers/gateway/requirements.txt"]
    assert layer["tool"]["setuptools"]["dynamic"]["dependencies"]["file"] == ["requirements.txt"]


def test_the_layer_links_only_the_gateway_package():
    links = {p.name: p.resolve() for p in LAYER.iterdir() if p.is_symlink()}
    assert links == {"gateway": ROOT / "gateway"}
