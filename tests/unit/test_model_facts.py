"""The model's facts are stated twice, once for the gateway (gateway/domain/registry.py) and
once for the container (inference_image/__init__.py, which ships without the gateway
package): they must agree, and both must tokenize exactly alike, or the gateway would bill
for tokens the model does not run on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import inference_image
from gateway.domain.registry import MINILM, MODELS

ROOT = Path(__file__).resolve().parents[2]
EXPORTED_TOKENIZER = ROOT / ".maas" / "model" / inference_image.TOKENIZER_FILE


def test_gateway_and_container_agree_on_the_model() -> None:
    assert MINILM.id == inference_image.MODEL_NAME
    assert MINILM.dimensions == inference_image.EMBEDDING_DIM
    assert MINILM.max_tokens == inference_image.MAX_TOKENS
    assert set(MODELS) == set(inference_image.MODEL_ALIASES)


def test_the_gateway_tokenizer_is_the_exported_models_tokenizer() -> None:
    if not EXPORTED_TOKENIZER.exists():
        pytest.fail("the ONNX model is missing: run `make model` (make test does it)")
    ours = json.loads(MINILM.tokenizer_file.read_text())
    exported = json.loads(EXPORTED_TOKENIZER.read_text())
    # Padding and truncation are turned off in code by both sides; everything else is the vocabulary,
    # the normalizer and the special tokens, and must be identical.
    for part in ("version", "added_tokens", "normalizer", "pre_tokenizer", "post_processor", "decoder", "model"):
        assert ours[part] == exported[part], part
