"""Transport schemas without a server: parsing and both JSON encoders."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from inference_image.server import schemas
from inference_image.server.config import Settings
from inference_image.server.errors import InvalidRequestError


def test_bodies_round_trip_float32() -> None:
    emb = np.random.default_rng(0).standard_normal((3, 384)).astype(np.float32)
    inv = json.loads(schemas.invocations_body(emb, 7))
    assert inv["prompt_tokens"] == 7
    assert np.array_equal(np.array(inv["embeddings"], dtype=np.float32), emb)
    for fmt in ("float", "base64"):
        data = json.loads(schemas.embeddings_body(emb, 7, fmt))
        rows = [d["embedding"] for d in data["data"]]
        got = (np.array([np.frombuffer(base64.b64decode(r), "<f4") for r in rows])
               if fmt == "base64" else np.array(rows, dtype=np.float32))
        assert np.array_equal(got, emb)
        assert data["usage"] == {"prompt_tokens": 7, "total_tokens": 7}


def test_embeddings_input_forms() -> None:
    parse = lambda d: schemas.parse_embeddings(d, vocab_size=100, max_items=4)  # noqa: E731
    assert parse({"input": "hi"}).texts == ["hi"]
    assert parse({"input": ["a", "b"]}).texts == ["a", "b"]
    assert parse({"input": [1, 2, 3]}).ids.to_lists() == [[1, 2, 3]]
    assert parse({"input": [[1], [2, 3]], "truncate": True}).truncate
    assert parse({"input": "x", "encoding_format": None}).encoding_format == "float"
    with pytest.raises(InvalidRequestError):
        parse({"input": ["a"] * 5})
    with pytest.raises(InvalidRequestError, match="must be 768"):
        schemas.parse_embeddings({"input": "a", "dimensions": 384}, vocab_size=100, max_items=4, dimensions=768)
    # The model is the app's to pick (test_models.py): the body's other fields are per model.


def test_settings_from_env() -> None:
    s = Settings.from_env({"PORT": "9000", "MAAS_MAX_WAIT_MS": "0.5", "MAX_ITEMS": "8"})
    assert (s.port, s.max_wait_ms, s.max_items, s.host) == (9000, 0.5, 8, "127.0.0.1")
    # Every catalogued model by default, the first one first; MAAS_MODELS picks, by id or alias.
    assert [m.id for m in s.models] == ["all-MiniLM-L6-v2", "all-mpnet-base-v2"]
    assert [m.dimensions for m in s.models] == [384, 768]
    one = Settings.from_env({"MAAS_MODELS": "sentence-transformers/all-mpnet-base-v2"})
    assert [(m.id, m.max_tokens) for m in one.models] == [("all-mpnet-base-v2", 384)]
    rooted = Settings.from_env({"MAAS_MODEL_ROOT": "/opt/ml/model-onnx"})
    assert [m.model_dir for m in rooted.models] == ["/opt/ml/model-onnx/all-MiniLM-L6-v2",
                                                    "/opt/ml/model-onnx/all-mpnet-base-v2"]
    with pytest.raises(ValueError, match="not in the catalogue"):
        Settings.from_env({"MAAS_MODELS": "text-embedding-3-small"})
    with pytest.raises(ValueError):
        Settings.from_env({"MAAS_MAX_QUEUE": "lots"})
    with pytest.raises(ValueError):
        Settings.from_env({"MAAS_MAX_BATCH_TOKENS": "16"})  # below one full item


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from inference_image.server.errors import InferenceError  # noqa: E402

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 200) | st.floats(allow_nan=False)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner,
                                                                max_size=3),
    max_leaves=12)
_keys = st.sampled_from(["input", "input_ids", "model", "encoding_format", "truncate",
                         "dimensions"])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_keys, _json, max_size=4))
def test_parsers_only_raise_request_errors(data: dict) -> None:
    for parse in (
        lambda d: schemas.parse_invocations(d, vocab_size=100, max_items=3, max_tokens=4),
        lambda d: schemas.parse_embeddings(d, vocab_size=100, max_items=3),
    ):
        try:
            parse(data)
        except InferenceError as exc:
            assert 400 <= exc.status < 500 and exc.message
