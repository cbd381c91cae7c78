"""The models this gateway serves. One entry today; the shape allows more."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

ASSETS = Path(__file__).resolve().parents[1] / "assets"


@dataclass(frozen=True)
class ModelSpec:
    id: str
    dimensions: int
    max_tokens: int  # including [CLS] and [SEP]
    tokenizer_file: Path
    owned_by: str = "maas-gateway"
    aliases: tuple[str, ...] = field(default_factory=tuple)


MINILM = ModelSpec(
    id="all-MiniLM-L6-v2",
    dimensions=384,
    max_tokens=256,
    tokenizer_file=ASSETS / "all-MiniLM-L6-v2.tokenizer.json",
    aliases=("sentence-transformers/all-MiniLM-L6-v2",),
)

MODELS: dict[str, ModelSpec] = {name: MINILM for name in (MINILM.id, *MINILM.aliases)}


def resolve(model: str) -> ModelSpec | None:
    return MODELS.get(model)
