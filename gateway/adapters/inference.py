"""The forwarder: token ids to the inference container, float32 vectors back.

Locally a pooled HTTP connection to the container's ``/invocations``; in AWS the same bytes
through ``sagemaker-runtime invoke_endpoint``. Both send the compact binary hop format
(``gateway.wire``) and the tenant and remaining time in the one metadata channel
SageMaker forwards (``CustomAttributes``), so the container schedules tenants fairly and drops
work whose caller has already given up."""

from __future__ import annotations

import sys
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from gateway import wire
from gateway.errors import ContainerDeadlineError, ServiceUnavailableError, UpstreamError, UpstreamTimeoutError

# The container gives up this much before the gateway does, so its 504 (work dropped, nothing
# computed for nobody) arrives before the gateway's own read timeout.
_CONTAINER_MARGIN_S = 0.25
_LITTLE = sys.byteorder == "little"


@dataclass(frozen=True, slots=True)
class Embeddings:
    """``count`` vectors of ``dim`` little-endian float32 in ``data`` (no numpy here)."""

    count: int
    dim: int
    prompt_tokens: int
    data: bytes

    def __post_init__(self) -> None:
        if len(self.data) != 4 * self.count * self.dim:
            raise ValueError(f"{len(self.data)} bytes are not {self.count} x {self.dim} float32")

    def raw(self, i: int) -> bytes:
        """The i-th vector's 4*dim bytes, as they came (base64 output needs no float round trip)."""
        if not 0 <= i < self.count:
            raise IndexError(f"vector {i} of {self.count}")
        size = 4 * self.dim
        return self.data[i * size:(i + 1) * size]

    def slice(self, start: int, stop: int, prompt_tokens: int) -> Embeddings:
        """Vectors ``start`` to ``stop - 1`` (one request's share of a call made for several)."""
        size = 4 * self.dim
        return Embeddings(count=stop - start, dim=self.dim, prompt_tokens=prompt_tokens,
                          data=self.data[start * size:stop * size])

    def vector(self, i: int) -> list[float]:
        floats = array("f")
        floats.frombytes(self.raw(i))
        if not _LITTLE:  # pragma: no cover - every AWS and local target is little-endian
            floats.byteswap()
        return floats.tolist()

    @classmethod
    def from_vectors(cls, vectors: list[list[float]], prompt_tokens: int) -> Embeddings:
        """For fakes and old JSON answers: float lists packed as float32."""
        dim = len(vectors[0]) if vectors else 0
        if any(len(v) != dim for v in vectors):
            raise ValueError("vectors of different lengths")
        floats = array("f", [x for v in vectors for x in v])
        if not _LITTLE:  # pragma: no cover
            floats.byteswap()
        return cls(count=len(vectors), dim=dim, prompt_tokens=prompt_tokens, data=floats.tobytes())


class InferenceClient(Protocol):
    def embed(self, input_ids: list[list[int]], *, tenant_id: str, timeout_s: float,
              model: str | None = None, background: bool = False) -> Embeddings:
        """``background``: a Batch API line, which the container serves after online requests."""
        ...
    def ready(self) -> bool: ...


def _request(input_ids: list[list[int]], tenant_id: str, timeout_s: float,
             model: str | None, background: bool = False) -> tuple[bytes, str]:
    if timeout_s <= 0:
        raise UpstreamTimeoutError("no time left for the inference service")
    container_ms = max(1, int((timeout_s - min(_CONTAINER_MARGIN_S, timeout_s / 10)) * 1000))
    return wire.encode_token_ids(input_ids), wire.format_attributes(tenant_id, container_ms, model,
                                                                    background=background)


def _unavailable(message: str) -> ServiceUnavailableError:
    return ServiceUnavailableError(message, headers={"Retry-After": "1"})


def _raise_for_status(status: int) -> None:
    if status in (429, 503):
        raise _unavailable("the inference service is overloaded; retry shortly")
    if status == 504:
        raise ContainerDeadlineError("the inference service did not answer in time")
    if status != 200:
        raise UpstreamError(f"the inference service failed (status {status})")


def parse_answer(input_ids: list[list[int]], body: bytes, content_type: str) -> Embeddings:
    """The container's answer, checked against what was asked; UpstreamError when it is
    unreadable or inconsistent (count, length, token count)."""
    try:
        if content_type.startswith(wire.JSON_TYPE):  # a container that predates the binary form
            payload = orjson.loads(body)
            result = Embeddings.from_vectors(payload["embeddings"], int(payload["prompt_tokens"]))
        else:
            count, dim, prompt_tokens, _ = wire.read_embeddings(body)
            result = Embeddings(count=count, dim=dim, prompt_tokens=prompt_tokens,
                                data=body[wire.EMBEDDINGS_HEADER.size:])
    except (wire.WireError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise UpstreamError("the inference service sent an unreadable answer") from error
    sent_tokens = sum(map(len, input_ids))
    if result.count != len(input_ids) or result.dim == 0 or result.prompt_tokens != sent_tokens:
        raise UpstreamError(
            f"the inference service answered {result.count} vectors of {result.dim} for "
            f"{result.prompt_tokens} tokens; {len(input_ids)} inputs of {sent_tokens} tokens were sent")
    return result


class HttpInferenceClient:
    def __init__(self, base_url: str, *, timeout_s: float, pool_size: int = 16) -> None:
        import urllib3

        self._urllib3 = urllib3
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s  # the longest any call may take, whatever it asks for
        self.pool = urllib3.connection_from_url(self.base_url, maxsize=pool_size, block=False,
                                                retries=False)

    def embed(self, input_ids: list[list[int]], *, tenant_id: str, timeout_s: float,
              model: str | None = None, background: bool = False) -> Embeddings:
        timeout_s = min(timeout_s, self.timeout_s)
        deadline = time.monotonic() + timeout_s
        body, attributes = _request(input_ids, tenant_id, timeout_s, model, background)
        exceptions = self._urllib3.exceptions
        try:
            try:
                response = self._post(body, attributes, deadline)
            except exceptions.ProtocolError:
                # Closed before any answer: a pooled keep-alive connection the container had
                # just closed. Nothing was computed: once more, on another connection.
                response = self._post(body, attributes, deadline)
        except exceptions.ReadTimeoutError as error:  # it had the request: really out of time
            raise UpstreamTimeoutError("the inference service did not answer in time") from error
        except exceptions.HTTPError as error:  # refused, reset, connect timeout (urllib3 2 makes
            # NewConnectionError a ConnectTimeoutError, hence a TimeoutError): unreachable
            raise _unavailable("the inference service is unreachable") from error
        _raise_for_status(response.status)
        return parse_answer(input_ids, response.data, response.headers.get("Content-Type", ""))

    def _post(self, body: bytes, attributes: str, deadline: float) -> Any:
        read_s = max(0.001, deadline - time.monotonic())
        return self.pool.urlopen(
            "POST", "/invocations", body=body,
            headers={"Content-Type": wire.TOKEN_IDS_TYPE, "Accept": wire.EMBEDDINGS_TYPE,
                     wire.ATTRIBUTES_HEADER: attributes},
            timeout=self._urllib3.Timeout(connect=min(1.0, read_s), read=read_s),
        )

    def ready(self) -> bool:
        try:
            return self.pool.urlopen("GET", "/ping", timeout=2.0).status == 200
        except self._urllib3.exceptions.HTTPError:
            return False


class SageMakerInferenceClient:
    """``invoke_endpoint`` with a read timeout of this call's own remaining time.

    botocore fixes a client's read timeout when the client is built, so ``client_for(seconds)``
    gives a ``sagemaker-runtime`` client whose read timeout is that many whole seconds (built
    once per value, then reused). A call waits ``min(max_timeout_s, timeout_s)`` rounded down:
    a request that arrives late (a slow cold start) gives up in time to answer its own 504 and
    refund, instead of being killed by Lambda mid-wait (a 502, the reservation held)."""

    def __init__(self, endpoint_name: str, *, client_for: Callable[[int], Any], max_timeout_s: float) -> None:
        self.endpoint_name = endpoint_name
        self.client_for = client_for
        self.max_timeout_s = max_timeout_s

    def embed(self, input_ids: list[list[int]], *, tenant_id: str, timeout_s: float,
              model: str | None = None, background: bool = False) -> Embeddings:
        from botocore.exceptions import BotoCoreError, ClientError, ReadTimeoutError

        timeout_s = min(timeout_s, self.max_timeout_s)
        if timeout_s < 1:  # botocore's timeouts are whole seconds here; less cannot be waited
            raise UpstreamTimeoutError("no time left for the inference service")
        client = self.client_for(int(timeout_s))
        body, attributes = _request(input_ids, tenant_id, timeout_s, model, background)
        try:
            response = client.invoke_endpoint(
                EndpointName=self.endpoint_name, ContentType=wire.TOKEN_IDS_TYPE,
                Accept=wire.EMBEDDINGS_TYPE, CustomAttributes=attributes, Body=body)
        except ReadTimeoutError as error:
            raise UpstreamTimeoutError("the inference service did not answer in time") from error
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code == "ModelError":  # the container answered non-2xx: its own status decides
                _raise_for_status(int(error.response.get("OriginalStatusCode") or 500))
            if code in ("ThrottlingException", "ServiceUnavailable", "ModelNotReadyException"):
                raise _unavailable("the inference service is busy; retry shortly") from error
            raise UpstreamError("the inference service failed") from error
        except BotoCoreError as error:
            raise _unavailable("the inference service is unreachable") from error
        return parse_answer(input_ids, response["Body"].read(), response.get("ContentType", ""))

    def ready(self) -> bool:
        return True  # SageMaker routes only to instances whose /ping passed
