"""The catalogue (gateway/assets/models.json) is read twice, by the gateway
(gateway/domain/registry.py) and by the container (inference_image/catalog.py, which ships
without the gateway package): both must agree, each exported artifact must be the pinned one,
and both sides must tokenize exactly alike, or the gateway would bill for tokens the model
does not run on."""

from __future__ import annotations

import json

import pytest

import inference_image
from gateway.domain.registry import CATALOGUE, MINILM, MODELS
from inference_image import catalog

CONTAINER = catalog.load()


def test_gateway_and_container_agree_on_the_models() -> None:
    assert [(s.id, s.dimensions, s.max_tokens, s.aliases) for s in CATALOGUE] == [
        (m.id, m.dimensions, m.max_tokens, m.aliases) for m in CONTAINER]
    assert set(MODELS) == {name for m in CONTAINER for name in m.names}
    # The container's single-model defaults are the first catalogued model's.
    assert (MINILM.id, MINILM.dimensions, MINILM.max_tokens) == (
        inference_image.MODEL_NAME, inference_image.EMBEDDING_DIM, inference_image.MAX_TOKENS)
    assert [s.id for s in CATALOGUE] == ["all-MiniLM-L6-v2", "all-mpnet-base-v2"]


@pytest.mark.parametrize("model", CONTAINER, ids=lambda m: m.id)
def test_each_artifact_is_the_pinned_export(model: catalog.CatalogModel) -> None:
    report_path = model.artifact(first=model.id == CONTAINER[0].id) / inference_image.REPORT_FILE
    if not report_path.exists():
        pytest.fail(f"{model.id} is not exported: run `make model` (make test does it)")
    report = json.loads(report_path.read_text())
    assert (report["model"], report["embedding_dim"], report["max_tokens"]) == (
        model.id, model.dimensions, model.max_tokens)
    assert report["min_cosine"] >= inference_image.MIN_COSINE
    # The export is deterministic (same torch, onnx, weights: same bytes); another result means
    # another toolchain or other weights, to review before the pin is changed.
    assert report["model_sha256"] == model.onnx_sha256


@pytest.mark.parametrize("spec", CATALOGUE, ids=lambda s: s.id)
def test_the_gateway_tokenizer_is_the_exported_models_tokenizer(spec) -> None:  # type: ignore[no-untyped-def]
    model = catalog.get(spec.id)
    exported_file = model.artifact(first=model.id == CONTAINER[0].id) / inference_image.TOKENIZER_FILE
    if not exported_file.exists():
        pytest.fail("the ONNX model is missing: run `make model` (make test does it)")
    ours = json.loads(spec.tokenizer_file.read_text())
    exported = json.loads(exported_file.read_text())
    # Padding and truncation are turned off in code by both sides; everything else is the vocabulary,
    # the normalizer and the special tokens, and must be identical.
    for part in ("version", "added_tokens", "normalizer", "pre_tokenizer", "post_processor", "decoder", "model"):
        assert ours[part] == exported[part], part
