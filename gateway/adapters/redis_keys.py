"""Every Redis key of a tenant, named in one place (the *where* of the limits, spelled out).

``tenant_key`` is the one function that names a tenant's keys: all of them share its hash tag
``{t:<id>}``, so each script touches one hash slot and runs on one shard (MemoryDB, Redis
Cluster). The admission scripts (gateway/adapters/redis_store.py), the active-tenants index
(gateway/adapters/active_tenants.py) and the flusher's streams (gateway/adapters/
tenant_streams.py) all take their keys from here; this module imports nothing of theirs, so
none of them needs another to name a key.
"""

from __future__ import annotations

from enum import Enum

STREAM_GROUP = "flusher"  # the consumer group the flusher reads every stream through
_TAG = "{t:"
_USAGE, _EVENTS = "usage", "events"  # the streams' names (plain strings: settle names one per request)


class StreamKind(Enum):
    """What a tenant's stream holds: usage events (to the ledger) or business events (relayed)."""

    USAGE = _USAGE
    EVENTS = _EVENTS


def tenant_key(tenant_id: str, name: str) -> str:
    return f"{{t:{tenant_id}}}:{name}"  # the hash tag is _TAG + tenant id + "}"


def usage_stream(tenant_id: str, part: int = 0) -> str:
    """The tenant's usage stream (part > 0: one of a hot tenant's further parts, gateway.domain.usage.stream_part)."""
    return tenant_key(tenant_id, _USAGE if not part else f"{_USAGE}:{part}")


def events_stream(tenant_id: str) -> str:
    """Business events the scripts emit (budget thresholds, credit alerts), relayed by the flusher."""
    return tenant_key(tenant_id, _EVENTS)


def stream_kind(stream: str) -> StreamKind:
    """What a stream named by ``usage_stream`` or ``events_stream`` holds, told by building its
    name again; any other key (a dead-letter stream, a counter) is a ``ValueError``."""
    head, sep, name = stream.partition("}:")
    tenant_id = head.removeprefix(_TAG)
    if sep and head.startswith(_TAG):
        if stream == events_stream(tenant_id):
            return StreamKind.EVENTS
        base, _, part = name.partition(":")
        if base == _USAGE and (not part or part.isdecimal()) and \
                stream == usage_stream(tenant_id, int(part or 0)):
            return StreamKind.USAGE
    raise ValueError(f"{stream!r} is not a tenant's usage or events stream")


def month_key(tenant_id: str, month: str) -> str:
    """The tenant's counters of a month: tok, cost (reserved), costc (charged), alert flags."""
    return tenant_key(tenant_id, f"m:{month}")


def key_month_key(tenant_id: str, key_id: str, month: str) -> str:
    return tenant_key(tenant_id, f"km:{key_id}:{month}")
