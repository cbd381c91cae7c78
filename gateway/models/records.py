"""What is stored: tenants, keys, usage events, audit entries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.domain.plans import LimitOverrides


def utcnow() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TenantRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    name: str
    plan: str
    status: Literal["active", "suspended"] = "active"
    limit_overrides: LimitOverrides = Field(default_factory=LimitOverrides)
    created_at: str
    updated_at: str | None = None


class KeyRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    tenant_id: str
    name: str | None = None
    scopes: list[str]
    key_hash: str
    created_at: str
    expires_at: str | None = None
    revoked_at: str | None = None
    rotated_to: str | None = None

    def expires_ms(self) -> int:
        if self.expires_at is None:
            return 0
        return int(datetime.fromisoformat(self.expires_at).timestamp() * 1000)

    def is_usable(self, now: datetime) -> bool:
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or now < datetime.fromisoformat(self.expires_at)

    def public(self) -> dict:
        """The key as admins may see it: never its hash."""
        return {
            "id": self.id,
            "object": "api_key",
            "tenant_id": self.tenant_id,
            "name": self.name,
            "scopes": self.scopes,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "status": "revoked" if self.revoked_at else "active",
        }


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
    def from_fields(cls, fields: dict) -> UsageEvent:
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
