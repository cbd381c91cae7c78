"""The models one container serves, each apart: its own ONNX session, tokenizer, token
budget and batcher (lanes, queue, scheduler), so a long batch of one model never waits
behind, nor delays, another model's work in a shared queue. On a GPU the sessions run
concurrently on their own streams; on a CPU they share the cores."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inference_image import TOKENIZER_FILE
from inference_image.server.batcher import Batcher
from inference_image.server.config import ModelSetting
from inference_image.tokenizer import load_tokenizer, truncating


@dataclass
class Served:
    setting: ModelSetting
    session: Any
    tokenizer: Any = None
    truncating_tokenizer: Any = None
    vocab_size: int = 0
    batcher: Batcher | None = None
    express: Any = field(default=None, repr=False)

    @property
    def id(self) -> str:
        return self.setting.id

    @property
    def dimensions(self) -> int:
        return self.setting.dimensions

    @property
    def max_tokens(self) -> int:
        return self.setting.max_tokens

    def load(self) -> str:
        """Blocking: tokenizer + session.initialize() (warm-up and reference check)."""
        self.tokenizer = load_tokenizer(Path(self.setting.model_dir) / TOKENIZER_FILE)
        self.truncating_tokenizer = truncating(self.tokenizer, self.max_tokens)
        self.vocab_size = self.tokenizer.get_vocab_size()
        provider: str = self.session.initialize()
        return provider

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "dimensions": self.dimensions, "max_tokens": self.max_tokens,
                "provider": self.session.provider, "ready": self.batcher is not None}
