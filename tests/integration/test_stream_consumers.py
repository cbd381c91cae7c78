"""Stale consumers of the usage streams' group are deleted, and nothing pending goes with them
(real redis-server)."""

from __future__ import annotations

import time

import pytest
import redis

from gateway.adapters.redis_store import STREAM_GROUP, usage_stream
from gateway.adapters.stream_consumers import ConsumerPruner
from tests.integration.conftest import seed_empty

STREAM = usage_stream("ten_prune")


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


def consumers(client: redis.Redis) -> dict[str, int]:
    return {c["name"].decode(): int(c["pending"]) for c in client.xinfo_consumers(STREAM, STREAM_GROUP)}


def test_prunes_idle_consumers_without_pending_entries_only(client):
    # GIVEN a group with a consumer that finished its work, one holding an unacknowledged entry,
    # and the caller itself
    client.xgroup_create(STREAM, STREAM_GROUP, id="0", mkstream=True)
    client.xadd(STREAM, {"n": "1"})
    client.xadd(STREAM, {"n": "2"})
    done = client.xreadgroup(STREAM_GROUP, "done", {STREAM: ">"}, count=1)[0][1]
    client.xack(STREAM, STREAM_GROUP, done[0][0])
    client.xreadgroup(STREAM_GROUP, "crashed", {STREAM: ">"}, count=1)  # left pending
    client.xgroup_createconsumer(STREAM, STREAM_GROUP, "me")
    time.sleep(0.05)
    # WHEN they are pruned (idle for 20 ms or more)
    deleted = ConsumerPruner(client, STREAM_GROUP, keep="me", min_idle_ms=20).prune(STREAM)
    # THEN only the idle consumer without pending entries is gone; the pending entry survives
    assert deleted == ["done"]
    assert consumers(client) == {"crashed": 1, "me": 0}
    assert client.xpending(STREAM, STREAM_GROUP)["pending"] == 1


def test_recently_active_consumers_are_kept(client):
    client.xgroup_create(STREAM, STREAM_GROUP, id="0", mkstream=True)
    client.xgroup_createconsumer(STREAM, STREAM_GROUP, "busy")
    assert ConsumerPruner(client, STREAM_GROUP, keep="me", min_idle_ms=60_000).prune(STREAM) == []
    assert "busy" in consumers(client)


def test_a_stream_without_group_is_nothing_to_prune(client):
    assert ConsumerPruner(client, STREAM_GROUP, keep="me", min_idle_ms=0).prune(usage_stream("ten_none")) == []


def test_maybe_prune_runs_at_most_once_per_interval(client):
    now = [1000.0]
    pruner = ConsumerPruner(client, STREAM_GROUP, keep="me", min_idle_ms=0, every_s=600, clock=lambda: now[0])
    client.xgroup_create(STREAM, STREAM_GROUP, id="0", mkstream=True)
    client.xgroup_createconsumer(STREAM, STREAM_GROUP, "old")
    assert pruner.maybe_prune(STREAM) == ["old"]
    client.xgroup_createconsumer(STREAM, STREAM_GROUP, "older")
    now[0] += 599
    assert pruner.maybe_prune(STREAM) == []  # too soon: not even one command
    now[0] += 1
    assert pruner.maybe_prune(STREAM) == ["older"]


def test_the_flusher_prunes_the_streams_it_drains(container):
    # GIVEN a tenant stream whose group remembers a flusher instance long gone
    from gateway.services.metering import Flusher

    client = container.redis
    seed_empty(container.limiter, "ten_f")  # as creating the tenant does
    client.xgroup_create(usage_stream("ten_f"), STREAM_GROUP, id="0", mkstream=True)
    client.xgroup_createconsumer(usage_stream("ten_f"), STREAM_GROUP, "gone-environment")
    flusher = Flusher(redis_client=client, usage=container.usage, accounts=container.accounts, consumer="current")
    flusher.pruner.min_idle_ms = 0
    # WHEN it flushes THEN the stale consumer is deleted and its own name is kept
    assert flusher.flush(["ten_f"]).errors == []
    names = {c["name"].decode() for c in client.xinfo_consumers(usage_stream("ten_f"), STREAM_GROUP)}
    assert names == {"current"}
