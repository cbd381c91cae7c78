"""The forwarder under container faults, on real sockets: a keep-alive connection the container
closes as a request arrives is retried once on a new connection (nothing was computed); a
refused connection is 503, a container that accepts and never answers 504, both with
Retry-After; behind the circuit breaker the requests that follow are refused at once."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import orjson
import pytest

from gateway.adapters.circuit import BreakerState, CircuitBreaker
from gateway.adapters.inference import HttpInferenceClient
from gateway.errors import ServiceUnavailableError, UpstreamTimeoutError
from infra.local.services import free_port

IDS = [[101, 1037, 102]]
ANSWER = orjson.dumps({"embeddings": [[0.6, 0.8]], "prompt_tokens": 3})


class Container:
    """A stand-in container on a real socket, speaking HTTP/1.1 with keep-alive. ``drop`` says
    which requests (1-based, over all connections) it reads and then closes its connection
    on without answering, as a server does that closes an idle keep-alive connection just
    as a request arrives."""

    def __init__(self, drop: set[int] | None = None, drop_all: bool = False) -> None:
        self.drop = drop or set()
        self.drop_all = drop_all
        self.requests = 0
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            buffer = b""
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(buffer) < length:
                    buffer += conn.recv(65536)
                buffer = buffer[length:]
                with self._lock:
                    self.requests += 1
                    number = self.requests
                if self.drop_all or number in self.drop:
                    return  # closed without an answer
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: keep-alive\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(ANSWER), ANSWER))

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def hung_port() -> Iterator[int]:
    """A container that accepts connections (the kernel does) and never answers (SIGSTOPped)."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=16)
    yield listener.getsockname()[1]
    listener.close()


def client(port: int, timeout_s: float = 5.0) -> HttpInferenceClient:
    return HttpInferenceClient(f"http://127.0.0.1:{port}", timeout_s=timeout_s)


def test_a_keep_alive_connection_closed_under_a_request_is_retried_once_on_a_new_one():
    # GIVEN a container that closes the pooled connection as the second request arrives
    container = Container(drop={2})
    try:
        forwarder = client(container.port)
        assert forwarder.embed(IDS, tenant_id="t", timeout_s=5).count == 1
        # WHEN the next request goes out on that (reused) connection
        result = forwarder.embed(IDS, tenant_id="t", timeout_s=5)
        # THEN it is sent once more on a new connection and answered
        assert result.count == 1 and result.prompt_tokens == 3
        assert (container.requests, container.connections) == (3, 2)
    finally:
        container.close()


def test_the_retry_is_once_only():
    container = Container(drop_all=True)
    try:
        with pytest.raises(ServiceUnavailableError) as error:
            client(container.port).embed(IDS, tenant_id="t", timeout_s=5)
        assert error.value.headers["Retry-After"] == "1"
        assert container.requests == 2
    finally:
        container.close()


def test_a_refused_connection_is_503_not_504():
    # urllib3 2 makes a refused connection (NewConnectionError) a ConnectTimeoutError.
    with pytest.raises(ServiceUnavailableError) as error:
        client(free_port()).embed(IDS, tenant_id="t", timeout_s=5)
    assert error.value.status == 503 and error.value.headers["Retry-After"] == "1"


class CountingClient:
    """The inner client, counting the calls the breaker lets through to it."""

    def __init__(self, inner: HttpInferenceClient) -> None:
        self.inner, self.calls = inner, []

    def embed(self, input_ids: list[list[int]], *, tenant_id: str, timeout_s: float,
              model: str | None = None):  # type: ignore[no-untyped-def]
        self.calls.append(timeout_s)
        return self.inner.embed(input_ids, tenant_id=tenant_id, timeout_s=timeout_s)

    def ready(self) -> bool:
        return self.inner.ready()


def test_a_hung_container_is_504_with_retry_after_then_the_breaker_refuses_at_once(hung_port):
    # (a frozen clock: "while the container is known to be hung" cannot run out mid-test)
    inner = CountingClient(client(hung_port))
    breaker = CircuitBreaker(inner, open_s=30.0, clock=lambda: 1000.0)  # type: ignore[arg-type]
    # GIVEN a request that really runs out of time: sent, and no answer within its 0.5 s
    with pytest.raises(UpstreamTimeoutError) as timed_out:
        breaker.embed(IDS, tenant_id="t", timeout_s=0.5)
    assert inner.calls == [0.5]
    assert timed_out.value.status == 504 and timed_out.value.headers["Retry-After"] == "1"
    # WHEN the next ones come while the container is known to be hung
    for _ in range(3):
        with pytest.raises(ServiceUnavailableError) as refused:
            breaker.embed(IDS, tenant_id="t", timeout_s=0.5)
        # THEN they are refused without waiting for it: the container is not even called
        # (no connection, no timeout)
        assert inner.calls == [0.5]
        assert refused.value.headers["Retry-After"] == "30"
    assert breaker.state is BreakerState.OPEN and not breaker.ready()


def test_the_container_wires_the_breaker_in_front_of_the_forwarder():
    from gateway.config import Settings
    from gateway.wiring import Container as Wiring

    wiring = Wiring(Settings(table_name="t", inference_url=f"http://127.0.0.1:{free_port()}", key_pepper="p"))
    assert isinstance(wiring.inference, CircuitBreaker)
    assert isinstance(wiring.inference.inner, HttpInferenceClient)
    with pytest.raises(ServiceUnavailableError):
        wiring.inference.embed(IDS, tenant_id="t", timeout_s=1)
    assert wiring.inference.state is BreakerState.OPEN
