"""The model catalogue on the running local stack (issue 24), through the official OpenAI
client: both models listed, each answering what sentence-transformers answers on the same
weights, and each request charged its own model's price, to the nano-unit, in ``usage.cost``,
the ledger, the usage report and the invoice; a model outside the plan is a 403."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

import numpy as np
import pytest
from openai import NotFoundError, OpenAI, PermissionDeniedError

from gateway.domain.plans import load_catalog
from tests.e2e.conftest import Api

TEXTS = ["The quick brown fox jumps over the lazy dog.", "a", "Größenwahn und Café au lait", "東京は日本の首都です。",
         "def f(x): return x ** 2  # code", "🙂 emoji and punctuation?!"]
MINILM, MPNET = "all-MiniLM-L6-v2", "all-mpnet-base-v2"
STARTER = load_catalog().get("starter")


@pytest.fixture(scope="module")
def mpnet_reference():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    from inference_image import catalog
    from inference_image.parts import source_dir

    return SentenceTransformer(str(source_dir(catalog.get(MPNET))), device="cpu")


@pytest.fixture(scope="module")
def finance(stack, admin) -> Api:
    created = admin.post("/billing/tenants/ten_operators/keys", json={"name": "finance-models", "scopes": ["finance"]})
    assert created.status_code == 201, created.text
    return Api(stack.api_url, created.json()["key"])


def window() -> dict[str, str]:
    now, day = datetime.now(UTC), timedelta(days=1)
    return {"start": (now - day).strftime("%Y-%m-%d"), "end": (now + day).strftime("%Y-%m-%d")}


def exact_cost(model: str, tokens: int) -> Decimal:
    return Decimal(tokens) * STARTER.price_per_1k_tokens[model] / 1000


def cosines(vectors: np.ndarray, expected: np.ndarray) -> np.ndarray:
    return (vectors * expected).sum(axis=1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(expected, axis=1)


def test_models_list_and_each_model_vectors_and_price(stack, admin, tenant, finance, reference_model,
                                                      mpnet_reference):
    client = OpenAI(base_url=f"{stack.api_url}/v1", api_key=tenant["key"], max_retries=0)
    listed = {m.id: m for m in client.models.list()}
    assert set(listed) == {MINILM, MPNET}
    extra = {model_id: m.model_extra or {} for model_id, m in listed.items()}
    assert (extra[MINILM]["dimensions"], extra[MINILM]["max_input_tokens"]) == (384, 256)
    assert (extra[MPNET]["dimensions"], extra[MPNET]["max_input_tokens"]) == (768, 384)
    assert extra[MPNET]["price_per_1k_tokens"] == str(STARTER.price_per_1k_tokens[MPNET]) == "0.0200"

    charged: dict[str, list[tuple[str, int, Decimal]]] = {MINILM: [], MPNET: []}
    for model, reference, dim in ((MINILM, reference_model, 384), (MPNET, mpnet_reference, 768)):
        for texts in (TEXTS, TEXTS[:2]):
            raw = client.embeddings.with_raw_response.create(model=model, input=texts)
            result = raw.parse()
            vectors = np.array([item.embedding for item in sorted(result.data, key=lambda d: d.index)])
            assert result.model == model and vectors.shape == (len(texts), dim)
            assert cosines(vectors, reference.encode(texts, normalize_embeddings=True)).min() >= 0.9999
            tokens = sum(len(reference.tokenizer(text)["input_ids"]) for text in texts)
            assert result.usage.prompt_tokens == tokens
            cost = Decimal(json.loads(raw.text)["usage"]["cost"])
            assert cost == exact_cost(model, tokens)  # the model's own price, to the nano-unit
            charged[model].append((raw.headers["x-request-id"], tokens, cost))

    # The ledger: one row per request, with its model and exact cost.
    deadline = time.monotonic() + 8
    while True:
        rows = finance.get("/billing/usage/events", params={"tenant_id": tenant["id"], **window()}).json()["data"]
        if len(rows) >= 4 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    by_request = {r["request_id"]: r for r in rows}
    for model, requests in charged.items():
        for request_id, tokens, cost in requests:
            row = by_request[request_id]
            assert (row["model"], row["prompt_tokens"], Decimal(row["cost"])) == (model, tokens, cost)

    # The usage report, by model, and the month's invoice: a line per model at its price.
    deadline = time.monotonic() + 8
    while True:
        report = finance.get("/billing/usage", params={"tenant_id": tenant["id"], "group_by": "model",
                                                       **window()}).json()["data"]
        if sum(r["requests"] for r in report) == 4 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert {r["model"]: (r["requests"], r["prompt_tokens"], Decimal(r["cost"])) for r in report} == {
        model: (len(req), sum(t for _, t, _ in req), sum(c for _, _, c in req)) for model, req in charged.items()}
    invoice = finance.get("/billing/invoices", params={"month": datetime.now(UTC).strftime("%Y-%m")}).json()
    lines = {x["model"]: x for x in invoice["data"] if x["tenant_id"] == tenant["id"]}
    assert set(lines) == {MINILM, MPNET}
    for model, requests in charged.items():
        exact = sum(c for _, _, c in requests)
        line = lines[model]
        assert (line["requests"], line["prompt_tokens"]) == (len(requests), sum(t for _, t, _ in requests))
        assert Decimal(line["unit_price_per_1k_tokens"]) == STARTER.price_per_1k_tokens[model]
        assert Decimal(line["amount"]) == exact.quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)


def test_unknown_model_is_404_and_a_model_outside_the_plan_403(stack, admin):
    created = admin.post("/billing/tenants", json={"name": "free-one", "plan": "free"}).json()
    key = admin.post(f"/billing/tenants/{created['id']}/keys", json={"name": "f"}).json()["key"]
    client = OpenAI(base_url=f"{stack.api_url}/v1", api_key=key, max_retries=0)
    assert [m.id for m in client.models.list()] == [MINILM]  # the free plan includes MiniLM alone
    with pytest.raises(PermissionDeniedError) as denied:
        client.embeddings.create(model=MPNET, input="a")
    assert denied.value.body["code"] == "model_not_allowed" and "free" in denied.value.body["message"]
    with pytest.raises(NotFoundError) as missing:
        client.embeddings.create(model="text-embedding-3-small", input="a")
    assert missing.value.body["code"] == "model_not_found"
    assert client.embeddings.create(model=MINILM, input="a").data[0].embedding
