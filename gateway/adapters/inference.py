"""The forwarder: token ids to the inference container, embeddings back.

Locally a pooled HTTP connection to the container's ``/invocations``; in AWS the same
payload through ``sagemaker-runtime invoke_endpoint``. Both keep SageMaker's contract."""

from __future__ import annotations

import time
from array import array
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import urllib3

from gateway.errors import ServiceUnavailableError, UpstreamError, UpstreamTimeoutError


@dataclass(frozen=True, slots=True)
class Embeddings:
    """``count`` vectors of ``dim`` little-endian float32s in ``data`` (no numpy here)."""

    count: int
    dim: int
    prompt_tokens: int
    data: bytes

    def vector(self, i: int) -> list[float]:
        values = array("f")
        values.frombytes(self.raw(i))
        return values.tolist()

    def raw(self, i: int) -> bytes:
        size = 4 * self.dim
        return self.data[i * size : (i + 1) * size]


class InferenceClient(Protocol):
    def embed(self, input_ids: list[list[int]], *, tenant_id: str, timeout_s: float) -> Embeddings: ...
    def ready(self) -> bool: ...


def _parse(status: int, body: bytes) -> Embeddings:
    if status == 503:
        raise ServiceUnavailableError("the inference service is overloaded; retry shortly",
                                      headers={"Retry-After": "1"})
    if status == 504:
        raise UpstreamTimeoutError("the inference service did not answer in time")
    if status != 200:
        raise UpstreamError(f"the inference service failed (status {status})")
    try:
        payload = orjson.loads(body)
        vectors = payload["embeddings"]
        dim = len(vectors[0]) if vectors else 0
        data = array("f", [value for vector in vectors for value in vector])
        if len(data) != dim * len(vectors):
            raise ValueError("ragged embeddings")
        return Embeddings(count=len(vectors), dim=dim, prompt_tokens=int(payload["prompt_tokens"]),
                          data=data.tobytes())
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError) as error:
        raise UpstreamError("the inference service sent an unreadable answer") from error


class HttpInferenceClient:
    def __init__(self, base_url: str, *, timeout_s: float, pool_size: int = 16) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = urllib3.Timeout(connect=1.0, read=timeout_s)
        self.pool = urllib3.PoolManager(maxsize=pool_size, block=False, retries=False)

    def embed(self, input_ids: list[list[int]], *, tenant_id: str, timeout_s: float) -> Embeddings:
        body = orjson.dumps({"input_ids": input_ids})
        deadline = time.monotonic() + min(timeout_s, self.timeout.read_timeout or timeout_s)
        try:
            try:
                response = self._post(body, deadline)
            except urllib3.exceptions.ProtocolError:
                # Closed before any answer: a pooled keep-alive connection the container had
                # just closed. Nothing was computed: once more, on another connection.
                response = self._post(body, deadline)
        except urllib3.exceptions.ReadTimeoutError as error:  # it had the request: really out of time
            raise UpstreamTimeoutError("the inference service did not answer in time") from error
        except urllib3.exceptions.HTTPError as error:  # refused, reset, connect timeout (urllib3 2
            # makes NewConnectionError a ConnectTimeoutError, hence a TimeoutError): unreachable
            raise ServiceUnavailableError("the inference service is unreachable") from error
        return _parse(response.status, response.data)

    def _post(self, body: bytes, deadline: float) -> urllib3.BaseHTTPResponse:
        read_s = max(0.001, deadline - time.monotonic())
        return self.pool.request("POST", f"{self.base_url}/invocations", body=body,
                                 headers={"Content-Type": "application/json"},
                                 timeout=urllib3.Timeout(connect=1.0, read=read_s))

    def ready(self) -> bool:
        try:
            return self.pool.request("GET", f"{self.base_url}/ping", timeout=2.0).status == 200
        except urllib3.exceptions.HTTPError:
            return False


class SageMakerInferenceClient:
    def __init__(self, endpoint_name: str, *, client: Any) -> None:
        self.endpoint_name = endpoint_name
        self.client = client

    def embed(self, input_ids: list[list[int]], *, tenant_id: str, timeout_s: float) -> Embeddings:
        from botocore.exceptions import BotoCoreError, ClientError, ReadTimeoutError

        try:
            response = self.client.invoke_endpoint(
                EndpointName=self.endpoint_name,
                ContentType="application/json",
                Accept="application/json",
                Body=orjson.dumps({"input_ids": input_ids}),
            )
        except ReadTimeoutError as error:
            raise UpstreamTimeoutError("the inference service did not answer in time") from error
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in ("ThrottlingException", "ServiceUnavailable", "ModelNotReadyException"):
                raise ServiceUnavailableError("the inference service is busy; retry shortly",
                                              headers={"Retry-After": "1"}) from error
            raise UpstreamError("the inference service failed") from error
        except BotoCoreError as error:
            raise ServiceUnavailableError("the inference service is unreachable",
                                          headers={"Retry-After": "1"}) from error
        return _parse(200, response["Body"].read())

    def ready(self) -> bool:
        return True  # SageMaker routes only to instances whose /ping passed
