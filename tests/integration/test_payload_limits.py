"""Payloads that fit: a request whose answer could exceed Lambda's 6 MB response is refused up
front (400 ``response_too_large``, naming the largest count that fits) before it is tokenized,
admitted or sent to the model; the bound holds against the real renderer at its worst."""

from __future__ import annotations

import random
import uuid
from array import array
from datetime import UTC, datetime

import pytest

from gateway.adapters.inference import Embeddings
from gateway.domain.admission import Decision, Verdict
from gateway.domain.payloads import LAMBDA_RESPONSE_LIMIT_BYTES, embedding_bytes, max_inputs
from gateway.domain.plans import LimitOverrides, Limits
from gateway.errors import InvalidRequestError, ServiceUnavailableError, UpstreamTimeoutError
from gateway.http.embeddings_route import render_embeddings
from gateway.http.responses import json_response
from gateway.models.api import EmbeddingsRequest
from gateway.services.embeddings import EmbeddingsResult
from infra.local.apigw.proxy import lambda_response_bytes
from tests.integration.conftest import make_principal

DIM = 384
UNREACHABLE = (ServiceUnavailableError, UpstreamTimeoutError)  # what the dead inference port answers


def longest_floats(n: int) -> bytes:
    """float32 values whose shortest double text is as long as it gets (17 digits after
    ``-0.0000``): random values between -1e-4 and -1e-5."""
    rng = random.Random(7)
    return array("f", [-rng.uniform(1.0000001e-5, 9.9999999e-5) for _ in range(n)]).tobytes()


def lambda_result_bytes(count: int, encoding_format: str, data: bytes) -> int:
    """What Lambda measures the invoke handler's result at, rendered by the real route."""
    result = EmbeddingsResult(model="all-MiniLM-L6-v2", embeddings=Embeddings(count, DIM, 3 * count, data),
                              prompt_tokens=3 * count, encoding_format=encoding_format,
                              limits=Limits(requests_per_minute=600, tokens_per_minute=150_000,
                                            monthly_tokens=10**8, max_concurrent_requests=16),
                              decision=Decision(verdict=Verdict.OK, requests_remaining=599, requests_reset_s=1,
                                                tokens_remaining=149_000, tokens_reset_s=1, retry_after_s=1,
                                                cost_nano=123_456_789),
                              key_limits=LimitOverrides())
    rendered = json_response(render_embeddings(result))
    return lambda_response_bytes({"statusCode": 200, "headers": {**rendered.headers, "x-request-id": str(uuid.uuid4()),
                                                                 "RateLimit": "x" * 200, "RateLimit-Policy": "y" * 200},
                                  "body": rendered.body, "isBase64Encoded": False})


@pytest.mark.parametrize("encoding_format", ["float", "base64"])
def test_the_bound_holds_for_the_longest_vectors_the_renderer_can_write(encoding_format):
    fits = min(max_inputs(DIM, encoding_format), 2048)
    size = lambda_result_bytes(fits, encoding_format, longest_floats(fits * DIM))
    assert size <= LAMBDA_RESPONSE_LIMIT_BYTES
    # and the bound is not loose by much: such vectors use at least 95% of it per item
    per_item = (lambda_result_bytes(100, encoding_format, longest_floats(100 * DIM)) -
                lambda_result_bytes(0, encoding_format, b"")) / 100
    assert 0.95 * embedding_bytes(DIM, encoding_format) <= per_item <= embedding_bytes(DIM, encoding_format)


def test_float_fits_649_and_base64_every_allowed_count():
    assert max_inputs(DIM, "float") == 649
    assert max_inputs(DIM, "base64") >= 2048  # OpenAI's 2,048 inputs always fit as base64


def test_a_request_that_cannot_fit_is_refused_before_any_work(container):
    caller, _ = make_principal(container)
    service = container.embeddings  # its inference server is at a dead port: reaching it is a 503
    texts = [f"text {i}" for i in range(650)]
    with pytest.raises(InvalidRequestError) as refused:
        service.create(EmbeddingsRequest(model="all-MiniLM-L6-v2", input=texts), caller, uuid.uuid4().hex)
    assert refused.value.code == "response_too_large" and refused.value.param == "input"
    assert "at most 649 inputs" in refused.value.message and "'base64' up to 2048" in refused.value.message
    # never admitted: nothing reserved (no tokens, no money, no lease); a refusal still costs
    # one request from the request bucket (the gate counts every 4xx before admission)
    tag = f"{{t:{caller.tenant.id}}}"
    month = datetime.now(UTC).strftime("%Y-%m")
    redis = container.redis
    assert redis.hmget(f"{tag}:m:{month}", "tok", "cost") in ([b"0", b"0"], [None, None])
    assert redis.zcard(f"{tag}:inflight") == 0
    full = container.limits.for_tenant(caller.tenant)
    per_minute = 60_000  # a bucket's level is in units of 1/60,000 (a per-minute rate, per ms)
    tokens_left, requests_left = (int(v) for v in redis.hmget(f"{tag}:buckets", "t", "r"))
    assert (tokens_left, requests_left) == (full.tokens_per_minute * per_minute,
                                            (full.requests_per_minute - 1) * per_minute)
    # the same count as base64 fits, so it goes on (to the dead inference server: 503/504)
    with pytest.raises(UNREACHABLE):
        service.create(EmbeddingsRequest(model="all-MiniLM-L6-v2", input=texts, encoding_format="base64"), caller,
                       uuid.uuid4().hex)
    # and 649 floats are not refused for their size
    with pytest.raises(UNREACHABLE):
        service.create(EmbeddingsRequest(model="all-MiniLM-L6-v2", input=texts[:649]), caller, uuid.uuid4().hex)
