"""One metered embeddings request, end to end, through HTTP on the running local stack."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import numpy as np
import openai
import pytest

from tests.e2e.conftest import Api

TEXTS = ["The quick brown fox jumps over the lazy dog.", "a", "Größenwahn und Café au lait", "東京は日本の首都です。",
         "def f(x): return x ** 2  # code", "🙂 emoji and punctuation?!"]


def today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


def usage_tokens(admin: Api, tenant_id: str) -> int:
    response = admin.get("/billing/usage", params={"start": today(), "end": today(), "tenant_id": tenant_id})
    assert response.status_code == 200, response.text
    return sum(row["prompt_tokens"] for row in response.json()["data"])


def wait_for_usage(admin: Api, tenant_id: str, expected: int, within_s: float = 5.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < within_s:
        if usage_tokens(admin, tenant_id) == expected:
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"usage of {tenant_id} is {usage_tokens(admin, tenant_id)}, expected {expected}")


def test_health_reports_every_part_ready(stack):
    response = Api(stack.api_url, None).get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.headers["x-request-id"]


def test_openai_client_embeddings_equal_sentence_transformers_and_are_billed(stack, admin, tenant, reference_model):
    client = openai.OpenAI(base_url=f"{stack.api_url}/v1", api_key=tenant["key"], max_retries=0)
    raw = client.embeddings.with_raw_response.create(model="all-MiniLM-L6-v2", input=TEXTS)
    result = raw.parse()
    assert raw.headers["x-request-id"]
    assert raw.headers["RateLimit-Policy"].startswith('"requests";q=600;w=60')
    assert '"tokens";r=' in raw.headers["RateLimit"]

    vectors = np.array([item.embedding for item in sorted(result.data, key=lambda d: d.index)])
    expected = reference_model.encode(TEXTS, normalize_embeddings=True)
    assert vectors.shape == (len(TEXTS), 384)
    cosines = (vectors * expected).sum(axis=1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosines.min() >= 0.9999
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)

    expected_tokens = sum(len(reference_model.tokenizer(text)["input_ids"]) for text in TEXTS)
    assert result.usage.prompt_tokens == result.usage.total_tokens == expected_tokens
    wait_for_usage(admin, tenant["id"], expected_tokens)


def test_float_and_base64_encodings_agree(stack, tenant):
    api = Api(stack.api_url, tenant["key"])
    as_float = api.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": "a"}).json()
    as_b64 = api.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": "a",
                                              "encoding_format": "base64"}).json()
    import base64

    decoded = np.frombuffer(base64.b64decode(as_b64["data"][0]["embedding"]), dtype="<f4")
    assert as_float["usage"]["prompt_tokens"] == 3  # [CLS] a [SEP]
    assert np.allclose(decoded, as_float["data"][0]["embedding"], atol=1e-7)


def test_wrong_key_is_401_in_openai_shape(stack, tenant):
    wrong = tenant["key"][:-1] + ("A" if tenant["key"][-1] != "A" else "B")
    for key in (wrong, "sk-not-ours", ""):
        response = Api(stack.api_url, key or None).post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2",
                                                                                 "input": "x"})
        assert response.status_code == 401
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert tenant["key"] not in response.text


def test_over_quota_is_429_insufficient_quota_and_not_charged(stack, admin, tenant):
    api = Api(stack.api_url, tenant["key"])
    ok = api.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": "hello world"})
    assert ok.status_code == 200
    spent = ok.json()["usage"]["prompt_tokens"]
    wait_for_usage(admin, tenant["id"], spent)
    patched = admin.patch(f"/billing/tenants/{tenant['id']}", json={"limits": {"monthly_tokens": spent + 3}})
    assert patched.status_code == 200 and patched.json()["limits"]["monthly_tokens"] == spent + 3
    time.sleep(2.5)  # limits are cached per container for up to 2 s

    over = api.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": "this is four tokens more"})
    assert over.status_code == 429
    assert over.json()["error"]["code"] == "insufficient_quota"
    assert over.headers["Retry-After"].isdigit()
    fits = api.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": "a"})
    assert fits.status_code == 200
    time.sleep(1.5)
    assert usage_tokens(admin, tenant["id"]) == spent + 3


@pytest.mark.parametrize("path", ["/v1/nope", "/billing/nothing/here"])
def test_unknown_routes_are_404_in_openai_shape(stack, path):
    response = Api(stack.api_url, None).get(path)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_route"
