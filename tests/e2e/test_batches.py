"""The Batch API on the running local stack (issue 26), through the official OpenAI client:
``files.create`` -> ``batches.create`` -> poll -> ``files.content``. Every line answered once,
with the online API's vectors, charged at the plan's batch price: credits, the ledger, the
usage report and the invoice agree to the nano-unit. Bad files are refused by line number and
charge nothing; a batch the credit cannot cover is a 402 at creation; a cancelled batch gives
the lines it did not answer back; a worker killed mid-batch finishes it, each line once."""

from __future__ import annotations

import io
import json
import os
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import pytest
from openai import APIStatusError, OpenAI

from gateway.domain.money import nano_per_token
from gateway.domain.plans import load_catalog
from tests.e2e.conftest import Api

MINILM, MPNET = "all-MiniLM-L6-v2", "all-mpnet-base-v2"
STARTER = load_catalog().get("starter")
NANO = Decimal(10) ** -9


def batch_price(model: str) -> Decimal:
    """Half the online price, in whole nano units per token (the plans file sets no batch price)."""
    return Decimal(nano_per_token(STARTER.price_per_1k_tokens[model]) // 2) * NANO


def prepaid_tenant(admin: Api, credit: str) -> tuple[dict, str]:
    tenant = admin.post("/billing/tenants", json={"name": "batcher", "plan": "starter"}).json()
    assert admin.patch(f"/billing/tenants/{tenant['id']}", json={"billing": {"mode": "prepaid"}}).status_code == 200
    granted = admin.post(f"/billing/tenants/{tenant['id']}/credits", json={"amount": credit})
    assert granted.status_code == 201, granted.text
    key = admin.post(f"/billing/tenants/{tenant['id']}/keys", json={"name": "b"}).json()["key"]
    return tenant, key


def jsonl(lines: list[dict]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def request_line(custom_id: str, model: str, text: str | list[str]) -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/embeddings", "body": {"model": model, "input": text}}


def wait_for(client: OpenAI, batch_id: str, statuses: set[str], seconds: float = 240):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in statuses:
            return batch
        assert time.monotonic() < deadline, f"batch {batch_id} still {batch.status}: {batch.request_counts}"
        time.sleep(0.5)


def read_jsonl(client: OpenAI, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def window() -> dict[str, str]:
    now, day = datetime.now(UTC), timedelta(days=1)
    return {"start": (now - day).strftime("%Y-%m-%d"), "end": (now + day).strftime("%Y-%m-%d")}


@pytest.fixture(scope="module")
def finance(stack, admin) -> Api:
    created = admin.post("/billing/tenants/ten_operators/keys", json={"name": "finance-batch", "scopes": ["finance"]})
    assert created.status_code == 201, created.text
    return Api(stack.api_url, created.json()["key"])


def ledger_rows(finance: Api, tenant_id: str, until: Callable[[list[dict]], bool]) -> list[dict]:
    """The tenant's ledger, read again until ``until`` holds of it or 120 s pass (the flusher's
    lag: in make test it may still be draining the load tests' backlog)."""
    deadline = time.monotonic() + 120
    while True:
        rows, cursor = [], None
        while True:
            page = finance.get("/billing/usage/events", params={"tenant_id": tenant_id, "limit": 100, **window(),
                                                                **({"cursor": cursor} if cursor else {})}).json()
            rows += page["data"]
            cursor = page.get("next_cursor")
            if not cursor:
                break
        if until(rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.3)


def cost_of(rows: list[dict], *, batch: bool = True) -> Decimal:
    return sum((Decimal(r["cost"]) for r in rows if r["model"].endswith("@batch") == batch), Decimal(0))


@pytest.mark.timeout(900)  # 2,000 lines and 2,000 online comparisons on two loaded cores
def test_two_thousand_lines_over_both_models_answered_once_at_the_batch_price(stack, admin, finance):
    tenant, key = prepaid_tenant(admin, "10.00")
    client = OpenAI(base_url=f"{stack.api_url}/v1", api_key=key, max_retries=0)
    texts = [f"document {i}: {'alpha beta gamma ' * (i % 7)}the end" for i in range(1000)]
    lines = [request_line(f"m-{i}", MINILM, text) for i, text in enumerate(texts)]
    lines += [request_line(f"p-{i}", MPNET, text) for i, text in enumerate(texts)]
    uploaded = client.files.create(file=("corpus.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
    assert (uploaded.purpose, uploaded.bytes) == ("batch", len(jsonl(lines)))

    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h",
                                  metadata={"job": "index"})
    assert batch.status == "in_progress" and batch.request_counts.total == 2000
    # The whole batch is reserved at creation: the balance already shows it taken.
    reserved = Decimal(Api(stack.api_url, key).get("/v1/balance").json()["credits_remaining"])
    assert reserved < Decimal("10.00")
    assert client.batches.list().data[0].id == batch.id

    done = wait_for(client, batch.id, {"completed"}, seconds=600)
    assert (done.request_counts.completed, done.request_counts.failed) == (2000, 0)
    assert done.error_file_id is None and done.metadata == {"job": "index"}
    output = read_jsonl(client, done.output_file_id)
    assert sorted(line["custom_id"] for line in output) == sorted(line["custom_id"] for line in lines)

    # Every vector equals the online API's for the same text.
    answers = {line["custom_id"]: line["response"] for line in output}
    total = Decimal(0)
    tokens = {MINILM: 0, MPNET: 0}
    for model, prefix in ((MINILM, "m"), (MPNET, "p")):
        online = []
        for start in range(0, len(texts), 100):
            online += [d.embedding for d in client.embeddings.create(model=model, input=texts[start:start + 100]).data]
        for i, expected in enumerate(online):
            answer = answers[f"{prefix}-{i}"]
            assert answer["status_code"] == 200
            body = answer["body"]
            got = np.array(body["data"][0]["embedding"])
            assert float(got @ np.array(expected)) / np.linalg.norm(got) / np.linalg.norm(expected) >= 0.99999
            used = body["usage"]["prompt_tokens"]
            assert Decimal(body["usage"]["cost"]) == used * batch_price(model)  # the batch price, per line
            tokens[model] += used
            total += Decimal(body["usage"]["cost"])

    # Credits: 10.00 less exactly what the lines cost (the online calls above cost their own).
    online_requests = 2 * len(range(0, len(texts), 100))
    rows = ledger_rows(finance, tenant["id"], lambda rows: cost_of(rows) >= total and len(
        [r for r in rows if not r["model"].endswith("@batch")]) >= online_requests)
    batch_rows = [r for r in rows if r["model"].endswith("@batch")]
    online_cost = cost_of(rows, batch=False)
    assert cost_of(rows) == total
    assert {m: sum(r["prompt_tokens"] for r in batch_rows if r["model"] == f"{m}@batch") for m in tokens} == tokens
    balance = Api(stack.api_url, key).get("/v1/balance").json()
    assert Decimal(balance["credits_remaining"]) == Decimal("10.00") - total - online_cost

    # The usage report and the invoice show the batch usage apart, at the batch price.
    report = finance.get("/billing/usage", params={"tenant_id": tenant["id"], "group_by": "model", **window()}).json()
    by_model = {r["model"]: r for r in report["data"]}
    for model in (MINILM, MPNET):
        assert by_model[f"{model}@batch"]["prompt_tokens"] == tokens[model]
        assert Decimal(by_model[f"{model}@batch"]["cost"]) == tokens[model] * batch_price(model)
    invoice = finance.get("/billing/invoices", params={"month": datetime.now(UTC).strftime("%Y-%m")}).json()
    invoice_lines = {x["model"]: x for x in invoice["data"] if x["tenant_id"] == tenant["id"]}
    for model in (MINILM, MPNET):
        line = invoice_lines[f"{model}@batch"]
        assert Decimal(line["unit_price_per_1k_tokens"]) == batch_price(model) * 1000
        assert line["prompt_tokens"] == tokens[model]


def test_a_bad_line_is_refused_by_its_number_and_nothing_is_charged(stack, admin):
    tenant, key = prepaid_tenant(admin, "1.00")
    client = OpenAI(base_url=f"{stack.api_url}/v1", api_key=key, max_retries=0)
    good = request_line("a", MINILM, "fine")
    for content, where in ((jsonl([good, {"custom_id": "b", "method": "POST", "url": "/v1/chat"}]), "Line 2"),
                           (jsonl([good, good]), "Line 2"),
                           (jsonl([good]) + b"{not json\n", "Line 2")):
        with pytest.raises(APIStatusError) as refused:
            client.files.create(file=("bad.jsonl", io.BytesIO(content)), purpose="batch")
        assert refused.value.status_code == 400 and where in refused.value.message
    # A line outside the plan is refused when the batch is created, naming it; nothing reserved.
    free = admin.post("/billing/tenants", json={"name": "free-batch", "plan": "free"}).json()
    free_key = admin.post(f"/billing/tenants/{free['id']}/keys", json={"name": "f"}).json()["key"]
    free_client = OpenAI(base_url=f"{stack.api_url}/v1", api_key=free_key, max_retries=0)
    uploaded = free_client.files.create(file=("m.jsonl", io.BytesIO(jsonl([good, request_line("x", MPNET, "no")]))),
                                        purpose="batch")
    with pytest.raises(APIStatusError) as refused:
        free_client.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h")
    assert refused.value.status_code == 403 and "Line 2" in refused.value.message
    assert free_client.batches.list().data == []
    assert Api(stack.api_url, key).get("/v1/balance").json()["credits_remaining"] == "1"


def test_a_batch_the_credit_cannot_cover_is_402_at_creation_and_takes_nothing(stack, admin):
    tenant, key = prepaid_tenant(admin, "0.01")
    client = OpenAI(base_url=f"{stack.api_url}/v1", api_key=key, max_retries=0)
    # 50 lines of 202 tokens at 0.0025 per 1,000: 0.02525, over the credit.
    lines = [request_line(f"l{i}", MINILM, "words " * 200) for i in range(50)]
    uploaded = client.files.create(file=("big.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
    with pytest.raises(APIStatusError) as refused:
        client.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h")
    assert refused.value.status_code == 402
    assert client.batches.list().data == []
    assert Api(stack.api_url, key).get("/v1/balance").json()["credits_remaining"] == "0.01"


def test_another_tenant_sees_neither_the_files_nor_the_batches(stack, admin):
    _, key = prepaid_tenant(admin, "1.00")
    _, other_key = prepaid_tenant(admin, "1.00")
    owner = OpenAI(base_url=f"{stack.api_url}/v1", api_key=key, max_retries=0)
    other = OpenAI(base_url=f"{stack.api_url}/v1", api_key=other_key, max_retries=0)
    uploaded = owner.files.create(file=("o.jsonl", io.BytesIO(jsonl([request_line("a", MINILM, "mine")]))),
                                  purpose="batch")
    batch = owner.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h")
    for call in (lambda: other.files.retrieve(uploaded.id), lambda: other.files.content(uploaded.id),
                 lambda: other.files.delete(uploaded.id), lambda: other.batches.retrieve(batch.id),
                 lambda: other.batches.cancel(batch.id),
                 lambda: other.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings",
                                              completion_window="24h")):
        with pytest.raises(APIStatusError) as refused:
            call()
        assert refused.value.status_code == 404
    assert other.batches.list().data == []
    assert wait_for(owner, batch.id, {"completed"}).request_counts.completed == 1


def test_a_cancelled_batch_gives_back_every_line_it_did_not_answer(stack, admin, finance):
    tenant, key = prepaid_tenant(admin, "5.00")
    client = OpenAI(base_url=f"{stack.api_url}/v1", api_key=key, max_retries=0)
    lines = [request_line(f"c{i}", MPNET, "a longer line of text to embed " * 8) for i in range(1500)]
    uploaded = client.files.create(file=("c.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h")
    assert client.batches.cancel(batch.id).status in ("cancelling", "cancelled")
    done = wait_for(client, batch.id, {"cancelled"})
    counts = done.request_counts
    output, errors = read_jsonl(client, done.output_file_id), read_jsonl(client, done.error_file_id)
    assert counts.completed == len(output) and counts.failed == len(errors) and counts.completed < 1500
    assert sorted(x["custom_id"] for x in output + errors) == sorted(x["custom_id"] for x in lines)
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
    charged = sum(Decimal(x["response"]["body"]["usage"]["cost"]) for x in output)
    rows = ledger_rows(finance, tenant["id"], lambda rows: cost_of(rows) >= charged)
    assert cost_of(rows) == charged
    assert Decimal(Api(stack.api_url, key).get("/v1/balance").json()["credits_remaining"]) == Decimal("5.00") - charged


@pytest.mark.xdist_group("heavy")
def test_a_worker_killed_mid_batch_finishes_it_each_line_once_and_charged_once(stack, admin, finance):
    tenant, key = prepaid_tenant(admin, "5.00")
    client = OpenAI(base_url=f"{stack.api_url}/v1", api_key=key, max_retries=0)
    lines = [request_line(f"k{i}", MINILM, f"line {i} " + "text " * (i % 30)) for i in range(1200)]
    uploaded = client.files.create(file=("k.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h")
    kills = 0
    deadline = time.monotonic() + 300
    while kills < 3 and time.monotonic() < deadline:
        progress = client.batches.retrieve(batch.id)
        if progress.status != "in_progress":
            break
        if progress.request_counts.completed > kills * 300 and stack.batches.pid:
            os.kill(stack.batches.pid, signal.SIGKILL)  # as a crash: the supervisor starts it again
            kills += 1
        time.sleep(0.2)
    assert kills >= 1, "the batch finished before the worker could be killed"
    done = wait_for(client, batch.id, {"completed"})
    output = read_jsonl(client, done.output_file_id)
    assert done.request_counts.completed == 1200 and len(output) == 1200
    assert sorted(x["custom_id"] for x in output) == sorted(x["custom_id"] for x in lines)  # each line once
    charged = sum(Decimal(x["response"]["body"]["usage"]["cost"]) for x in output)
    rows = ledger_rows(finance, tenant["id"], lambda rows: cost_of(rows) >= charged)
    assert len({r["request_id"] for r in rows}) == len(rows)
    assert cost_of(rows) == charged  # charged once
    assert Decimal(Api(stack.api_url, key).get("/v1/balance").json()["credits_remaining"]) == Decimal("5.00") - charged
