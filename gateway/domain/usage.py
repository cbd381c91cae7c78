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

    def to_fields(self) -> dict[str, str]:
        return {
            "rid": self.request_id,
            "tid": self.tenant_id,
            "kid": self.key_id,
            "model": self.model,
            "tokens": str(self.prompt_tokens),
            "ts": str(self.timestamp_ms),
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
        )

    @property
    def moment(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)

    @property
    def date(self) -> str:
        return self.moment.strftime("%Y-%m-%d")
