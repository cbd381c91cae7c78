"""The real server process on the real model: values, shapes, errors, batching, metrics."""

from __future__ import annotations

import base64
import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from inference_image.tokenizer import truncating
from inference_image.validation import cosine_rows, validation_texts

from .conftest import ServerProc, http


def _emb(body: bytes) -> np.ndarray:
    data = json.loads(body)
    if "embeddings" in data:
        return np.array(data["embeddings"], dtype=np.float32)
    return np.array([d["embedding"] for d in data["data"]], dtype=np.float32)


@pytest.fixture(scope="module")
def texts(tokenizer) -> list[str]:
    return validation_texts(lambda t: len(tokenizer.encode(t).ids))


@pytest.fixture(scope="module")
def reference(st_model, texts) -> np.ndarray:
    return st_model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)


def test_ping(server: ServerProc) -> None:
    status, _, body = server.get("/ping")
    assert status == 200
    assert json.loads(body)["provider"] == "CPUExecutionProvider"


def test_invocations_equal_sentence_transformers(server, tokenizer, texts, reference) -> None:
    ids = [e.ids for e in truncating(tokenizer).encode_batch(texts)]
    status, headers, body = server.post("/invocations", {"input_ids": ids})
    assert status == 200, body
    data = json.loads(body)
    emb = np.array(data["embeddings"], dtype=np.float32)
    assert emb.shape == (len(texts), 384)
    assert cosine_rows(emb, reference).min() >= 0.9999
    assert data["prompt_tokens"] == sum(len(x) for x in ids)
    assert headers["x-compute-tokens"] == str(data["prompt_tokens"])


def test_v1_embeddings_equal_sentence_transformers(server, texts, reference, tokenizer) -> None:
    short = [t for t in texts if len(tokenizer.encode(t).ids) <= 256]
    idx = [texts.index(t) for t in short]
    status, headers, body = server.post("/v1/embeddings",
                                        {"model": "all-MiniLM-L6-v2", "input": short})
    assert status == 200, body
    data = json.loads(body)
    assert data["object"] == "list" and data["model"] == "all-MiniLM-L6-v2"
    assert [d["index"] for d in data["data"]] == list(range(len(short)))
    assert all(d["object"] == "embedding" for d in data["data"])
    assert cosine_rows(_emb(body), reference[idx]).min() >= 0.9999
    n = sum(len(tokenizer.encode(t).ids) for t in short)
    assert data["usage"] == {"prompt_tokens": n, "total_tokens": n}
    assert headers["x-compute-tokens"] == str(n)


def test_a_single_string_and_its_token_count(server) -> None:
    status, _, body = server.post("/v1/embeddings", {"input": "a"})
    assert status == 200
    data = json.loads(body)
    assert data["usage"]["prompt_tokens"] == 3  # [CLS] a [SEP]
    vec = np.array(data["data"][0]["embedding"])
    assert vec.shape == (384,) and abs(np.linalg.norm(vec) - 1) < 1e-5


def test_base64_encoding_matches_floats(server) -> None:
    _, _, floats = server.post("/v1/embeddings", {"input": ["hello world"]})
    _, _, b64 = server.post("/v1/embeddings", {"input": ["hello world"],
                                               "encoding_format": "base64"})
    raw = base64.b64decode(json.loads(b64)["data"][0]["embedding"])
    assert np.allclose(np.frombuffer(raw, dtype="<f4"), _emb(floats)[0], atol=1e-7)


def test_long_input_needs_truncate(server, st_model) -> None:
    text = "word " * 400
    status, _, body = server.post("/v1/embeddings", {"input": text})
    assert status == 400
    assert json.loads(body)["error"]["code"] == "context_length_exceeded"
    status, _, body = server.post("/v1/embeddings", {"input": text, "truncate": True})
    assert status == 200
    assert json.loads(body)["usage"]["prompt_tokens"] == 256
    ref = st_model.encode([text], normalize_embeddings=True)
    assert cosine_rows(_emb(body), ref).min() >= 0.9999


BAD = [
    ("/invocations", b"", 400),
    ("/invocations", b"{not json", 400),
    ("/invocations", b"\xff\xfe\x00{", 400),
    ("/invocations", b"[]", 400),
    ("/invocations", b"{}", 400),
    ("/invocations", b'{"input_ids": []}', 400),
    ("/invocations", b'{"input_ids": [[]]}', 400),
    ("/invocations", b'{"input_ids": [1, 2]}', 400),
    ("/invocations", b'{"input_ids": [[101, "7", 102]]}', 400),
    ("/invocations", b'{"input_ids": [[101, 1.5, 102]]}', 400),
    ("/invocations", b'{"input_ids": [[101, true, 102]]}', 400),
    ("/invocations", b'{"input_ids": [[101, -1, 102]]}', 400),
    ("/invocations", b'{"input_ids": [[101, 30522, 102]]}', 400),
    ("/invocations", b'{"input_ids": [[101, 99999999999999999999999, 102]]}', 400),
    ("/invocations", json.dumps({"input_ids": [[7] * 257]}).encode(), 400),
    ("/invocations", json.dumps({"input_ids": [[7]] * 2049}).encode(), 400),
    ("/v1/embeddings", b'{"input": ""}', 400),
    ("/v1/embeddings", b'{"input": []}', 400),
    ("/v1/embeddings", b'{"input": [1, "a"]}', 400),
    ("/v1/embeddings", b'{"input": {"a": 1}}', 400),
    ("/v1/embeddings", b'{"input": "a", "encoding_format": "int8"}', 400),
    ("/v1/embeddings", b'{"input": "a", "truncate": "yes"}', 400),
    ("/v1/embeddings", b'{"input": "a", "dimensions": 128}', 400),
    ("/v1/embeddings", b'{"model": "text-embedding-3-small", "input": "a"}', 404),
    ("/v1/embeddings", b'{"input": [[101, 40000]]}', 400),
    ("/invocations", b"{" + b'"input_ids": [[1]],' * 10 + b'"x": NaN', 400),
    ("/invocations", b'{"input_ids": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400),
    ("/v1/embeddings", b'{"input": "\ud800"}', 400),
]


@pytest.mark.parametrize(("path", "body", "status"), BAD)
def test_bad_input_is_rejected_in_openai_shape(server, path, body, status) -> None:
    got, _, raw = server.post(path, body)
    assert got == status, raw
    err = json.loads(raw)["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error" and err["message"]


def test_body_over_the_limit_is_413(server) -> None:
    # A raw socket: the server answers from Content-Length without reading the 9 MB body,
    # which a client that insists on sending all of it first sees as a reset.
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: "
                     b"application/json\r\nContent-Length: 9000000\r\n\r\n{\"input_ids\"")
        raw = b""
        while b"\r\n\r\n" not in raw or not raw.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    assert json.loads(body)["error"]["code"] == "payload_too_large"


def test_streamed_body_over_the_limit_is_413(server) -> None:
    # A chunked body declares no length: the server counts what arrives and stops at the limit.
    host, port = server.url.removeprefix("http://").split(":")
    chunk = b"x" * 1_000_000
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: "
                     b"application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        raw = b""
        try:
            for _ in range(10):
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        except OSError:
            pass  # closed after answering: the rest was never read
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                break
            if not data:
                break
            raw += data
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), raw[:200]
    assert json.loads(body)["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize(("method", "path", "status"),
                         [("GET", "/nope", 404), ("GET", "/invocations", 405)])
def test_unknown_routes_answer_in_openai_shape(server, method, path, status) -> None:
    got, _, raw = http(method, server.url + path)
    assert got == status
    assert set(json.loads(raw)["error"]) == {"message", "type", "param", "code"}


def test_concurrent_requests_are_batched_and_unchanged(server, tokenizer) -> None:
    sentences = [f"sentence number {i} about {'cats' if i % 2 else 'the stock market'}"
                 + " and more" * (i % 7) for i in range(32)]
    ids = [tokenizer.encode(s).ids for s in sentences]
    alone = [_emb(server.post("/invocations", {"input_ids": [x]})[2])[0] for x in ids]
    rounds_before = server.metric("maas_inference_batch_requests_count")
    calls_before = server.metric("maas_inference_batch_items_count")
    items_before = server.metric("maas_inference_batch_items_sum")

    barrier = threading.Barrier(32)

    def one(x: list[int]) -> np.ndarray:
        barrier.wait()
        status, headers, body = server.post("/invocations", {"input_ids": [x]})
        assert status == 200 and headers["x-compute-tokens"] == str(len(x))
        return _emb(body)[0]

    with ThreadPoolExecutor(32) as pool:
        together = list(pool.map(one, ids))

    rounds = server.metric("maas_inference_batch_requests_count") - rounds_before
    calls = server.metric("maas_inference_batch_items_count") - calls_before
    items = server.metric("maas_inference_batch_items_sum") - items_before
    assert items == 32
    assert calls < 32 and rounds < 32, (calls, rounds)  # some model calls held > 1 request
    assert cosine_rows(np.array(together), np.array(alone)).min() >= 0.9999


def test_metrics_expose_the_scheduler(server) -> None:
    status, headers, body = server.get("/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    text = body.decode()
    for name in ("maas_inference_queue_depth", "maas_inference_batch_items_bucket",
                 "maas_inference_batch_tokens_bucket", "maas_inference_batch_padding_ratio",
                 "maas_inference_tokens_total", "maas_inference_stage_seconds_bucket",
                 "maas_inference_errors_total", "maas_inference_ready 1.0"):
        assert name in text, name
    assert 'stage="compute"' in text and 'stage="queue"' in text
