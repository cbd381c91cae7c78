"""A charged request: what the usage stream carries and the ledger keeps, and which ledger
partition (shard) it is written to."""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

# DynamoDB gives one partition key about 1,000 write units/s and a ledger item costs 2 in a
# transaction: a tenant's ledger is spread over enough partitions (shards) that each takes at
# most this many events per second at the tenant's full request rate (40% of a partition).
LEDGER_SHARD_EVENTS_PER_S = 200
MAX_LEDGER_SHARDS = 64


# A tenant's usage stream is split in parts past this many ledger shards: each part is drained
# by one flush worker (its shards' rollup cells are its own, so parts never contend), so a tenant
# above one worker's pace is drained by several. Every tenant below 1,600 requests/s has one part.
LEDGER_SHARDS_PER_STREAM = 8
STREAM_PARTS = -(-MAX_LEDGER_SHARDS // LEDGER_SHARDS_PER_STREAM)


def stream_part(shard: int | None) -> int:
    """The part of the tenant's usage stream an event of this ledger shard is appended to."""
    return (shard or 0) // LEDGER_SHARDS_PER_STREAM


def ledger_shards(requests_per_minute: int) -> int:
    """How many ledger partitions a tenant allowed ``requests_per_minute`` writes a day over."""
    return max(1, min(MAX_LEDGER_SHARDS, -(-requests_per_minute // (60 * LEDGER_SHARD_EVENTS_PER_S))))


def ledger_shard(request_id: str, shards: int) -> int:
    """The request's shard: a pure function of its id, so a redelivered event lands on the item
    it was first written to (the ledger's conditional put is what makes the flush exactly-once)."""
    return zlib.crc32(request_id.encode()) % shards if shards > 1 else 0


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """One charged request, as the stream carries it and the ledger keeps it."""

    request_id: str
    tenant_id: str
    key_id: str
    model: str
    prompt_tokens: int
    timestamp_ms: int
    cost_nano: int = 0
    debits: str = ""  # credit taken: "grant:nano,..." (prepaid tenants)
    tier_tokens: tuple[int, ...] = ()  # tokens in each price tier of the plan
    # Which ledger partition of its day the event goes to (``ledger_shard``); None only for a
    # stream entry written before the ledger was sharded, which goes where it went then.
    ledger_shard: int | None = 0

    def debited(self) -> dict[str, int]:
        """Credit taken from each grant."""
        taken: dict[str, int] = {}
        for part in filter(None, self.debits.split(",")):
            grant, amount = part.split(":")
            taken[grant] = taken.get(grant, 0) + int(amount)
        return taken

    def to_fields(self) -> dict[str, str]:
        return {
            "rid": self.request_id,
            "tid": self.tenant_id,
            "kid": self.key_id,
            "model": self.model,
            "tokens": str(self.prompt_tokens),
            "ts": str(self.timestamp_ms),
            "cost": str(self.cost_nano),
            "debits": self.debits,
            "tiers": ",".join(map(str, self.tier_tokens)),
            **({"ls": str(self.ledger_shard)} if self.ledger_shard is not None else {}),
        }

    @classmethod
    def from_fields(cls, fields: Mapping[bytes | str, bytes | str]) -> UsageEvent:
        get = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in fields.items()
        }
        return cls(
            request_id=get["rid"],
            tenant_id=get["tid"],
            key_id=get["kid"],
            model=get["model"],
            prompt_tokens=int(get["tokens"]),
            timestamp_ms=int(get["ts"]),
            cost_nano=int(get.get("cost") or 0),
            debits=get.get("debits") or "",
            tier_tokens=tuple(int(n) for n in (get.get("tiers") or "").split(",") if n),
            ledger_shard=int(get["ls"]) if get.get("ls") else None,
        )

    @property
    def moment(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)

    @property
    def date(self) -> str:
        return self.moment.strftime("%Y-%m-%d")
