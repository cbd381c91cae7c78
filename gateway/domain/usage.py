"""A charged request: what the usage stream carries and the ledger keeps."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime


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
        )

    @property
    def moment(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)

    @property
    def date(self) -> str:
        return self.moment.strftime("%Y-%m-%d")
