"""The key builders of gateway/adapters/redis_keys.py say what a stream they named holds (the
flusher relays an events stream and writes a usage stream to the ledger by it, no suffix test)."""

from __future__ import annotations

import pytest

from gateway.adapters.redis_keys import (
    StreamKind,
    events_stream,
    key_month_key,
    month_key,
    stream_kind,
    tenant_key,
    usage_stream,
)
from gateway.domain.usage import STREAM_PARTS

TENANTS = ["ten_0123456789abcdef", "t", "ten:with:colons", "ten_events", "usage"]


@pytest.mark.parametrize("tenant_id", TENANTS)
def test_every_stream_a_builder_names_is_told_its_kind(tenant_id):
    assert stream_kind(events_stream(tenant_id)) is StreamKind.EVENTS
    for part in range(STREAM_PARTS):
        assert stream_kind(usage_stream(tenant_id, part)) is StreamKind.USAGE


@pytest.mark.parametrize("tenant_id", TENANTS)
def test_keys_that_are_no_tenant_stream_are_refused(tenant_id):
    # GIVEN keys of the same tenant that are not one of its streams
    streams = (events_stream(tenant_id), usage_stream(tenant_id), usage_stream(tenant_id, 1))
    dead = [f"{stream}:dead" for stream in streams]
    others = [*dead,
              month_key(tenant_id, "2026-12"), key_month_key(tenant_id, "k1", "2026-12"), tenant_key(tenant_id, "cfg"),
              tenant_key(tenant_id, "usage:01"), tenant_key(tenant_id, "usage:"), tenant_key(tenant_id, "usage:-1"),
              f"t:{tenant_id}:events", "{active}:tenants", "events", ""]
    # THEN none is taken for a stream (the flusher would otherwise write it to the ledger)
    for key in others:
        with pytest.raises(ValueError):
            stream_kind(key)


def test_every_key_of_a_tenant_shares_its_hash_tag():
    keys = [tenant_key("ten_a", "cfg"), usage_stream("ten_a"), usage_stream("ten_a", 3), events_stream("ten_a"),
            month_key("ten_a", "2026-12"), key_month_key("ten_a", "k", "2026-12")]
    assert {key.partition("}")[0] for key in keys} == {"{t:ten_a"}
