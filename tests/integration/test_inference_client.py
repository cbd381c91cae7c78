"""The gateway's inference clients against the real container (exported ONNX model, CPU):
the binary hop format, its checks, deadlines, and SageMaker's invoke_endpoint semantics."""

from __future__ import annotations

import base64
import json
import struct
import threading
import time
import urllib.request
from array import array
from typing import Any

import pytest

from gateway import wire
from gateway.adapters.inference import (
    Embeddings,
    HttpInferenceClient,
    SageMakerInferenceClient,
    parse_answer,
)
from gateway.errors import ServiceUnavailableError, UpstreamError, UpstreamTimeoutError
from infra.local.services import free_port

IDS = [[101, 7592, 2088, 102], [101, 1037, 102], [101, 2023, 2003, 1037, 3231, 102]]


def _json_invocations(url: str, input_ids: list[list[int]]) -> dict[str, Any]:
    request = urllib.request.Request(f"{url}/invocations", json.dumps({"input_ids": input_ids}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.headers["Content-Type"].startswith("application/json")
        return json.loads(response.read())


def _close(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1e-6


def _metric(url: str, name: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " "))


# -- the HTTP client ----------------------------------------------------------------------
def test_binary_answer_equals_the_json_one(inference_url):
    client = HttpInferenceClient(inference_url, timeout_s=20)
    result = client.embed(IDS, tenant_id="ten_a", timeout_s=20)
    reference = _json_invocations(inference_url, IDS)  # what old clients and the README get

    assert (result.count, result.dim, result.prompt_tokens) == (3, 384, 13)
    assert len(result.data) == 3 * 384 * 4
    for i, expected in enumerate(reference["embeddings"]):
        # the same float32 values (up to the last bit: another call may batch differently)
        assert _close(result.vector(i), array("f", expected).tolist())
        assert _close(array("f", result.raw(i)).tolist(), list(struct.unpack("<384f", result.raw(i))))
        assert abs(sum(x * x for x in result.vector(i)) - 1) < 1e-5  # L2-normalised
    assert base64.b64decode(base64.b64encode(result.raw(1))) == result.data[1536:3072]
    with pytest.raises(IndexError):
        result.raw(3)
    assert client.ready()


def test_2048_inputs_fit_sagemaker_and_lambda_limits(inference_url):
    # GIVEN the largest request the gateway sends (2,048 inputs), short ones to keep it quick
    ids = [[101, 1000 + i % 5000, 102] for i in range(2048)]
    client = HttpInferenceClient(inference_url, timeout_s=60)
    # WHEN it is embedded
    result = client.embed(ids, tenant_id="ten_big", timeout_s=60)
    # THEN the answer is 3.1 MB of float32 (JSON would be ~9.7 MB, over the 6 MB limits)
    assert result.count == 2048 and result.prompt_tokens == 3 * 2048
    assert wire.EMBEDDINGS_HEADER.size + len(result.data) == 16 + 2048 * 384 * 4 < 6 * 1024 * 1024
    assert len(wire.encode_token_ids(ids)) == 8 + 4 * 2048 + 4 * 3 * 2048


def test_unreachable_is_503_with_retry_after():
    client = HttpInferenceClient(f"http://127.0.0.1:{free_port()}", timeout_s=2)
    with pytest.raises(ServiceUnavailableError) as info:
        client.embed(IDS, tenant_id="t", timeout_s=2)
    assert info.value.headers == {"Retry-After": "1"}
    assert not client.ready()


def test_a_request_past_its_deadline_is_dropped_by_the_container(inference_url):
    # GIVEN the model busy with a slice of another tenant's large request (> 1 s on 2 cores)
    busy = [[101] + [2000 + i % 90] * 254 + [102] for i in range(128)]
    done: list[Any] = []
    client = HttpInferenceClient(inference_url, timeout_s=60)
    items_before = _metric(inference_url, "maas_inference_items_total")
    slices_before = _metric(inference_url, "maas_inference_batch_requests_count")
    neighbour = threading.Thread(target=lambda: done.append(
        client.embed(busy, tenant_id="ten_busy", timeout_s=60)))
    neighbour.start()
    deadline = time.monotonic() + 10
    while _metric(inference_url, "maas_inference_batch_requests_count") == slices_before:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    # WHEN a request too large for the express lane has 0.5 s left
    late = [[101] + [3000 + i] * 100 + [102] for i in range(8)]
    with pytest.raises(UpstreamTimeoutError) as info:
        client.embed(late, tenant_id="ten_late", timeout_s=0.5)
    neighbour.join(120)
    # THEN the container said 504 before the client's own timeout (a 504 answer, not a
    # ReadTimeoutError: the client gives the container its deadline less a margin), and
    # computed none of it
    assert info.value.__cause__ is None, info.value.__cause__
    assert done and done[0].count == 128
    assert _metric(inference_url, "maas_inference_items_total") - items_before == 128


# -- answers that do not add up -------------------------------------------------------------
def _answer(count: int, dim: int, tokens: int, floats: int | None = None) -> bytes:
    n = count * dim if floats is None else floats
    return wire.embeddings_header(count, dim, tokens) + b"\0" * (4 * n)


@pytest.mark.parametrize(("body", "why"), [
    (b"", "empty"),
    (b"MAE1\x01\x00", "shorter than the header"),
    (b"XXXX" + _answer(3, 384, 13)[4:], "wrong magic"),
    (_answer(3, 384, 13, floats=3 * 384 - 1), "one float short"),
    (_answer(3, 384, 13, floats=3 * 384 + 1), "one float too many"),
    (_answer(2, 384, 13), "wrong count"),
    (_answer(3, 384, 12), "wrong token count"),
    (_answer(3, 0, 13), "no dimensions"),
])
def test_unreadable_or_inconsistent_answers_are_upstream_errors(body, why):
    with pytest.raises(UpstreamError):
        parse_answer(IDS, body, wire.EMBEDDINGS_TYPE)


def test_a_json_answer_from_an_older_container_is_still_read():
    body = json.dumps({"embeddings": [[0.5] * 4] * 3, "prompt_tokens": 13}).encode()
    result = parse_answer(IDS, body, "application/json")
    assert (result.count, result.dim, result.vector(2)) == (3, 4, [0.5] * 4)
    with pytest.raises(UpstreamError):
        parse_answer(IDS, b'{"embeddings": [[0.5]], "prompt_tokens": 13}', "application/json")


def test_embeddings_refuses_data_of_the_wrong_size():
    with pytest.raises(ValueError):
        Embeddings(count=2, dim=384, prompt_tokens=4, data=b"\0" * 384 * 4)


# -- SageMaker ------------------------------------------------------------------------------
class LocalSageMakerRuntime:
    """``invoke_endpoint`` as SageMaker runs it, against the real container: the body, the
    content types and CustomAttributes go through as they would (the attributes as the
    X-Amzn-SageMaker-Custom-Attributes header); a non-2xx answer raises ModelError with the
    container's status in OriginalStatusCode; only Body and ContentType come back."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.calls: list[dict[str, Any]] = []

    def invoke_endpoint(self, **params: Any) -> dict[str, Any]:
        from botocore.exceptions import ClientError
        from botocore.response import StreamingBody

        self.calls.append(params)
        request = urllib.request.Request(
            f"{self.url}/invocations", params["Body"], method="POST",
            headers={"Content-Type": params["ContentType"], "Accept": params["Accept"],
                     "X-Amzn-SageMaker-Custom-Attributes": params["CustomAttributes"]})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                body, content_type = response.read(), response.headers["Content-Type"]
        except urllib.error.HTTPError as error:
            raise ClientError({"Error": {"Code": "ModelError", "Message": error.read().decode()},
                               "OriginalStatusCode": error.code}, "InvokeEndpoint") from None
        import io

        return {"Body": StreamingBody(io.BytesIO(body), len(body)), "ContentType": content_type}


def test_sagemaker_client_through_invoke_endpoint(inference_url):
    runtime = LocalSageMakerRuntime(inference_url)
    client = SageMakerInferenceClient("maas-embeddings", client_for=lambda _: runtime, max_timeout_s=20)
    result = client.embed(IDS, tenant_id="ten_sm/1", timeout_s=10)
    direct = HttpInferenceClient(inference_url, timeout_s=10).embed(IDS, tenant_id="x", timeout_s=10)
    assert (result.count, result.dim, result.prompt_tokens) == (direct.count, direct.dim, direct.prompt_tokens)
    assert all(_close(result.vector(i), direct.vector(i)) for i in range(3))
    (call,) = runtime.calls
    assert call["ContentType"] == wire.TOKEN_IDS_TYPE and call["Accept"] == wire.EMBEDDINGS_TYPE
    assert len(call["CustomAttributes"]) <= 1024
    assert wire.parse_attributes(call["CustomAttributes"])["tenant"] == "ten_sm/1"
    assert 9000 <= int(wire.parse_attributes(call["CustomAttributes"])["timeout_ms"]) < 10000


@pytest.mark.parametrize(("status", "error"), [(503, ServiceUnavailableError), (429, ServiceUnavailableError),
                                               (504, UpstreamTimeoutError), (400, UpstreamError)])
def test_sagemaker_model_errors_keep_the_container_status(status, error):
    from botocore.exceptions import ClientError

    class Failing:
        def invoke_endpoint(self, **params: Any) -> dict[str, Any]:
            raise ClientError({"Error": {"Code": "ModelError", "Message": "x"}, "OriginalStatusCode": status},
                              "InvokeEndpoint")

    with pytest.raises(error):
        SageMakerInferenceClient("e", client_for=lambda _: Failing(), max_timeout_s=20).embed(
            IDS, tenant_id="t", timeout_s=5)


def test_sagemaker_read_timeout_is_the_calls_own_remaining_time(inference_url):
    # GIVEN clients by read timeout, as the container builds them (one per whole second)
    asked: list[int] = []
    runtime = LocalSageMakerRuntime(inference_url)

    def client_for(read_timeout_s: int) -> LocalSageMakerRuntime:
        asked.append(read_timeout_s)
        return runtime

    client = SageMakerInferenceClient("maas-embeddings", client_for=client_for, max_timeout_s=20)
    # WHEN calls come with 24.6 s, 7.9 s and 0.4 s left
    client.embed(IDS, tenant_id="t", timeout_s=24.6)
    client.embed(IDS, tenant_id="t", timeout_s=7.9)
    with pytest.raises(UpstreamTimeoutError):
        client.embed(IDS, tenant_id="t", timeout_s=0.4)
    # THEN each waits at most min(20, what is left), whole seconds; the last never calls
    assert asked == [20, 7]
    assert len(runtime.calls) == 2
