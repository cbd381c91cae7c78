"""The models this gateway serves: the catalogue, ``gateway/assets/models.json`` (ids,
dimensions, token limits, tokenizers, ONNX artifacts and their sha256, per-model limits). The
container reads the same file (inference_image/catalog.py); each plan's prices per model are in
the plans file (infra/plans.json), and a plan includes the models it prices. Adding a model is
a catalogue entry, a price in the plans and an export: no code."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ASSETS = Path(__file__).resolve().parents[1] / "assets"
CATALOG_FILE = ASSETS / "models.json"


@dataclass(frozen=True)
class ModelSpec:
    id: str
    dimensions: int
    max_tokens: int  # an input's limit, special tokens included
    tokenizer_file: Path
    owned_by: str = "maas-gateway"
    aliases: tuple[str, ...] = field(default_factory=tuple)
    description: str = ""
    # The model's own largest request, in tokens, on top of each plan's (None: the plan's).
    max_request_tokens: int | None = None


def _spec(raw: dict[str, Any]) -> ModelSpec:
    limits = raw.get("limits") or {}
    unknown = set(limits) - {"max_request_tokens"}
    if unknown:
        raise ValueError(f"{raw['id']}: unknown per-model limits {sorted(unknown)}")
    return ModelSpec(id=raw["id"], dimensions=int(raw["dimensions"]), max_tokens=int(raw["max_tokens"]),
                     tokenizer_file=ASSETS / raw["tokenizer"], aliases=tuple(raw.get("aliases", ())),
                     description=raw.get("description", ""), max_request_tokens=limits.get("max_request_tokens"))


def load_models(path: Path = CATALOG_FILE) -> tuple[ModelSpec, ...]:
    specs = tuple(_spec(raw) for raw in json.loads(path.read_text(encoding="utf-8"))["models"])
    names = [name for spec in specs for name in (spec.id, *spec.aliases)]
    if len(names) != len(set(names)):
        raise ValueError(f"{path}: a model id or alias is listed twice")
    return specs


CATALOGUE: tuple[ModelSpec, ...] = load_models()
MINILM = CATALOGUE[0]  # the default model: the catalogue lists it first

# Every name a request may use (ids and aliases) → its model.
MODELS: dict[str, ModelSpec] = {name: spec for spec in CATALOGUE for name in (spec.id, *spec.aliases)}


def resolve(model: str) -> ModelSpec | None:
    return MODELS.get(model)
