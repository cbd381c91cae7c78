"""The model's own tokenizer, configured the way the served model runs it.

The packaged ``tokenizer.json`` pads every input to a fixed 128 tokens and truncates at 128;
the model runs unpadded items up to 256 tokens (sentence_bert_config ``max_seq_length``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from inference_image import MAX_TOKENS


def serving_tokenizer_json(source: str | Path) -> str:
    """The packaged tokenizer.json with its fixed padding and 128-token truncation removed."""
    data: dict[str, Any] = json.loads(Path(source).read_text(encoding="utf-8"))
    data["padding"] = None
    data["truncation"] = None
    return json.dumps(data, ensure_ascii=False)


def load_tokenizer(path: str | Path, *, truncate_at: int | None = None) -> Tokenizer:
    """Load ``path`` with no padding; truncation only when ``truncate_at`` is given."""
    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    if truncate_at is None:
        tok.no_truncation()
    else:
        tok.enable_truncation(max_length=truncate_at)
    return tok


def truncating(tok: Tokenizer, max_tokens: int = MAX_TOKENS) -> Tokenizer:
    """A copy of ``tok`` that truncates at ``max_tokens`` (special tokens included)."""
    clone = Tokenizer.from_str(tok.to_str())
    clone.no_padding()
    clone.enable_truncation(max_length=max_tokens)
    return clone
