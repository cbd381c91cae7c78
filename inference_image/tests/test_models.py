"""One container, several models: every catalogued model has its own session and batcher,
/ping lists them, the request's ``model`` (the body, or the hop's custom attributes) picks
one, and each answers what sentence-transformers answers on the same weights."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway import wire
from inference_image import catalog
from inference_image.parts import source_dir
from inference_image.validation import cosine_rows

MODELS = catalog.load()
TEXTS = ["Hello, world!", "The quick brown fox jumps over the lazy dog.", "机器学习是人工智能的一个分支。",
         "Crème brûlée, naïve café, jalapeño.", "def add(a: int, b: int) -> int: return a + b"]


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from inference_image.tests.conftest import start_server, stop_server

    for model in MODELS:
        if not (model.artifact(first=model is MODELS[0]) / "model.onnx").is_file():
            pytest.fail(f"{model.id} is not exported: run `make model` (make test does it)")
    first = MODELS[0].artifact(first=True)
    srv = start_server(first, tmp_path_factory.mktemp("models") / "server.log",
                       MAAS_MODELS=",".join(m.id for m in MODELS), MAAS_EXPRESS_LANE_TOKENS="0")
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def st_vectors() -> dict[str, np.ndarray]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    from inference_image.export import source_dir as packaged

    out = {}
    for model in MODELS:
        folder = source_dir(model) if model.parts else packaged(model)
        st = SentenceTransformer(str(folder), device="cpu")
        out[model.id] = st.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    return out


def test_ping_lists_every_model(both) -> None:  # type: ignore[no-untyped-def]
    status, _, body = both.get("/ping")
    assert status == 200
    listed = json.loads(body)["models"]
    assert [(m["id"], m["dimensions"], m["max_tokens"], m["ready"]) for m in listed] == [
        (m.id, m.dimensions, m.max_tokens, True) for m in MODELS]
    _, _, body = both.get("/v1/models")
    assert [m["id"] for m in json.loads(body)["data"]] == [m.id for m in MODELS]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.id)
def test_each_model_answers_as_sentence_transformers(both, st_vectors, model) -> None:  # type: ignore[no-untyped-def]
    status, _, body = both.post("/v1/embeddings", {"model": model.id, "input": TEXTS})
    assert status == 200, body
    data = json.loads(body)
    emb = np.array([d["embedding"] for d in data["data"]], dtype=np.float32)
    assert data["model"] == model.id and emb.shape == (len(TEXTS), model.dimensions)
    assert cosine_rows(emb, st_vectors[model.id]).min() >= 0.9999


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.id)
def test_the_hop_names_the_model(both, st_vectors, model) -> None:  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(model.artifact(first=model is MODELS[0])) / "tokenizer.json"))
    ids = [e.ids for e in tok.encode_batch(TEXTS)]
    status, headers, body = both.post("/invocations", wire.encode_token_ids(ids), headers={
        "content-type": wire.TOKEN_IDS_TYPE, "accept": wire.EMBEDDINGS_TYPE,
        wire.ATTRIBUTES_HEADER: wire.format_attributes("ten_a", 5000, model.id)})
    assert status == 200, body
    count, dim, tokens, data = wire.read_embeddings(body)
    assert (count, dim, tokens) == (len(TEXTS), model.dimensions, sum(map(len, ids)))
    emb = np.frombuffer(data, dtype="<f4").reshape(count, dim)
    assert cosine_rows(emb, st_vectors[model.id]).min() >= 0.9999


def test_an_input_over_one_models_limit_fits_the_other(both) -> None:  # type: ignore[no-untyped-def]
    ids = [[101] + [1000] * 300 + [102]]  # 302 tokens: over MiniLM's 256, under MPNet's 384
    over = both.post("/v1/embeddings", {"model": "all-MiniLM-L6-v2", "input": ids})
    assert over[0] == 400 and b"context_length_exceeded" in over[2]
    assert both.post("/v1/embeddings", {"model": "all-mpnet-base-v2", "input": ids})[0] == 200


def test_unknown_model_is_404_and_a_hop_without_one_gets_the_default(both) -> None:  # type: ignore[no-untyped-def]
    status, _, body = both.post("/v1/embeddings", {"model": "text-embedding-3-small", "input": "a"})
    assert status == 404 and json.loads(body)["error"]["code"] == "model_not_found"
    status, _, body = both.post("/invocations", {"input_ids": [[101, 7592, 102]]}, headers={
        wire.ATTRIBUTES_HEADER: wire.format_attributes("ten_a", 5000, "nope")})
    assert status == 404
    status, _, body = both.post("/invocations", {"input_ids": [[101, 7592, 102]]})
    assert status == 200 and len(json.loads(body)["embeddings"][0]) == MODELS[0].dimensions
