"""Tenants share the model fairly, deadlines and disconnects stop work: real server processes
on the real model."""

from __future__ import annotations

import http.client
import socket
import threading
import time

import pytest

from gateway import wire
from inference_image.bench.common import pct

from .conftest import ServerProc

SMALL = [[101, 7592, 102]]  # "hello": 3 tokens
LARGEST = [[101] + [2000 + (i + k) % 900 for k in range(69)] + [102] for i in range(2048)]  # 2,048 x 71


class Client:
    """One keep-alive connection speaking the gateway's binary hop format."""

    def __init__(self, server: ServerProc, tenant: str, timeout_ms: int = 60_000) -> None:
        host, port = server.url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=120)
        self.headers = {"Content-Type": wire.TOKEN_IDS_TYPE, "Accept": wire.EMBEDDINGS_TYPE,
                        wire.ATTRIBUTES_HEADER: wire.format_attributes(tenant, timeout_ms)}

    def embed(self, ids: list[list[int]], body: bytes | None = None) -> tuple[int, float]:
        body = body or wire.encode_token_ids(ids)
        t0 = time.perf_counter()
        self.conn.request("POST", "/invocations", body, self.headers)
        response = self.conn.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - t0
        if response.status == 200:
            count, dim, _, _ = wire.read_embeddings(body)
            assert (count, dim) == (len(ids), 384)
        return response.status, elapsed


def _latencies(client: Client, n: int) -> list[float]:
    out = []
    for _ in range(n):
        status, elapsed = client.embed(SMALL)
        assert status == 200
        out.append(elapsed)
    return out


@pytest.mark.slow
def test_a_tenants_largest_requests_do_not_slow_another_tenants_small_ones(server) -> None:
    # GIVEN tenant B's small requests on an otherwise idle server
    b = Client(server, "ten_b")
    _latencies(b, 20)  # warm
    unloaded = _latencies(b, 200)
    # WHEN tenant A sends its largest requests (2,048 items of 71 tokens) back to back
    stop = threading.Event()
    a_done: list[int] = []

    body = wire.encode_token_ids(LARGEST)  # once: B's client shares this process's GIL

    def tenant_a() -> None:
        a = Client(server, "ten_a")
        while not stop.is_set():
            a_done.append(a.embed(LARGEST, body)[0])

    rounds = server.metric("maas_inference_batch_requests_count")
    tokens_before = server.metric("maas_inference_tokens_total")
    threads = [threading.Thread(target=tenant_a) for _ in range(2)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while server.metric("maas_inference_batch_requests_count") < rounds + 1:  # A computes
        assert time.monotonic() < deadline
        time.sleep(0.02)
    # The machine is shared: other processes' bursts land in one window or the other. Up to
    # three loaded windows while A keeps going (without fairness B waits ~1 s in every one).
    p99_unloaded = pct(unloaded, 99)
    for _ in range(3):
        loaded = _latencies(b, 200)
        p99_loaded = pct(loaded, 99)
        print(f"B p50/p99 unloaded {pct(unloaded, 50) * 1000:.1f}/{p99_unloaded * 1000:.1f} "
              f"ms, loaded {pct(loaded, 50) * 1000:.1f}/{p99_loaded * 1000:.1f} ms")
        if p99_loaded < 2 * p99_unloaded:
            break
    a_in_flight = server.metric("maas_inference_requests_in_flight")
    stop.set()
    for t in threads:
        t.join(300)
    a_tokens = server.metric("maas_inference_tokens_total") - tokens_before - 3 * 600
    # THEN B's p99 stays under twice its unloaded p99, while A kept the model busy
    assert p99_loaded < 2 * p99_unloaded, (p99_unloaded, p99_loaded)
    # A was computing all along: in flight when B finished, a full slice of it (16,384
    # tokens, the default MAAS_MAX_BATCH_TOKENS) or more computed by the end
    assert a_in_flight >= 1 and a_tokens >= 16384, (a_in_flight, a_tokens)
    # (A's own answers may be 504 on a crowded 2-core machine: 145k tokens take 10-40 s here)
    assert set(a_done) <= {200, 504}


@pytest.mark.slow
def test_a_client_that_disconnects_is_not_computed(make_server) -> None:
    # GIVEN the model busy with a large request (no express lane: everything queues)
    srv = make_server(MAAS_EXPRESS_LANE_TOKENS="0", MAAS_MAX_BATCH_TOKENS="4096")
    busy: list[int] = []
    t = threading.Thread(target=lambda: busy.append(
        Client(srv, "ten_a").embed([[101] + [2000] * 254 + [102]] * 64)[0]))
    items = srv.metric("maas_inference_items_total")
    t.start()
    deadline = time.monotonic() + 30
    while srv.metric("maas_inference_batch_requests_count") < 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    # WHEN another tenant sends a request and hangs up before it is computed
    host, port = srv.url.removeprefix("http://").split(":")
    body = wire.encode_token_ids([[101, 7592, 102]] * 7)
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(f"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: "
                     f"{wire.TOKEN_IDS_TYPE}\r\nContent-Length: {len(body)}\r\n"
                     f"{wire.ATTRIBUTES_HEADER}: tenant=ten_gone\r\n\r\n".encode() + body)
        while srv.metric("maas_inference_queue_depth") < 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    t.join(120)
    # THEN only the large request's 64 items were computed, not the 7 of the one who left
    assert busy == [200]
    time.sleep(0.2)
    assert srv.metric("maas_inference_items_total") - items == 64
    assert srv.metric("maas_inference_queue_depth") == 0


def test_deadline_in_custom_attributes_gives_504_without_compute(make_server) -> None:
    srv = make_server(MAAS_EXPRESS_LANE_TOKENS="0", MAAS_MAX_BATCH_TOKENS="4096")
    busy: list[int] = []
    t = threading.Thread(target=lambda: busy.append(
        Client(srv, "ten_a").embed([[101] + [2000] * 254 + [102]] * 64)[0]))
    items = srv.metric("maas_inference_items_total")
    t.start()
    deadline = time.monotonic() + 30
    while srv.metric("maas_inference_batch_requests_count") < 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    status, elapsed = Client(srv, "ten_b", timeout_ms=100).embed(SMALL * 5)
    t.join(120)
    assert status == 504 and elapsed < 1.0
    assert busy == [200]
    assert srv.metric("maas_inference_items_total") - items == 64
