"""The model catalogue as the container reads it: ``gateway/assets/models.json``, the one list
of models (the gateway reads the same file; the image copies it). Standard library only: the
container ships without the gateway package.

Where a model's exported artifact lives: ``$MAAS_MODEL_ROOT/<id>`` when that is set (the
image), else ``$MAAS_MODEL_DIR`` for the first model (the historical single-model setting),
else the catalogue's ``artifact.dir`` under the repository root.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CATALOG_FILE = Path(os.environ.get("MAAS_MODEL_CATALOG") or REPO / "gateway" / "assets" / "models.json")


@dataclass(frozen=True)
class Part:
    package: str
    version: str
    sha256: str


@dataclass(frozen=True)
class CatalogModel:
    id: str
    dimensions: int
    max_tokens: int  # special tokens included
    artifact_dir: str
    onnx_sha256: str | None
    aliases: tuple[str, ...] = ()
    source_module: str | None = None  # a pip package whose get_model_path() is the folder
    source_zip: str | None = None  # or a zip split over pinned wheels
    parts: tuple[Part, ...] = field(default_factory=tuple)

    @property
    def names(self) -> frozenset[str]:
        return frozenset({self.id, *self.aliases})

    def artifact(self, env: Mapping[str, str] | None = None, *, first: bool = False) -> Path:
        env = os.environ if env is None else env
        if env.get("MAAS_MODEL_ROOT"):
            return Path(env["MAAS_MODEL_ROOT"]) / self.id
        if first and env.get("MAAS_MODEL_DIR"):
            return Path(env["MAAS_MODEL_DIR"])
        path = Path(self.artifact_dir)
        return path if path.is_absolute() else REPO / path


def _model(raw: dict[str, Any]) -> CatalogModel:
    source = raw.get("source") or {}
    return CatalogModel(
        id=raw["id"], dimensions=int(raw["dimensions"]), max_tokens=int(raw["max_tokens"]),
        artifact_dir=raw["artifact"]["dir"], onnx_sha256=raw["artifact"].get("onnx_sha256"),
        aliases=tuple(raw.get("aliases", ())), source_module=source.get("module"),
        source_zip=source.get("zip"),
        parts=tuple(Part(p["package"], p["version"], p["sha256"]) for p in source.get("parts", ())),
    )


def load(path: Path = CATALOG_FILE) -> list[CatalogModel]:
    models = [_model(raw) for raw in json.loads(path.read_text(encoding="utf-8"))["models"]]
    names = [name for model in models for name in model.names]
    if len(names) != len(set(names)):
        raise ValueError(f"{path}: a model id or alias is listed twice")
    return models


def get(model_id: str, path: Path = CATALOG_FILE) -> CatalogModel:
    for model in load(path):
        if model_id in model.names:
            return model
    raise KeyError(f"{model_id!r} is not in the catalogue {path}")
