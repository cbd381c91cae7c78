"""Plans, limits and prices. Plans live in a versioned file (infra/plans.json), are
validated here at load and copied into the table by ``maas admin bootstrap``."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

# Bucket arithmetic in Redis is exact in doubles while rate x 60000 stays below 2**53.
RatePerMinute = Annotated[int, Field(gt=0, le=10**9)]
TokenAmount = Annotated[int, Field(gt=0, le=10**15)]
SlotCount = Annotated[int, Field(gt=0, le=10**6)]


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    requests_per_minute: RatePerMinute
    tokens_per_minute: RatePerMinute
    monthly_tokens: TokenAmount
    max_concurrent_requests: SlotCount


class LimitOverrides(BaseModel):
    """An admin's partial override of a plan's limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests_per_minute: RatePerMinute | None = None
    tokens_per_minute: RatePerMinute | None = None
    monthly_tokens: TokenAmount | None = None
    max_concurrent_requests: SlotCount | None = None

    def apply(self, limits: Limits) -> Limits:
        return limits.model_copy(update=self.model_dump(exclude_none=True))


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    currency: str = "USD"
    limits: Limits
    # Price per 1,000 prompt tokens, per model id; exact decimals, never floats.
    price_per_1k_tokens: dict[str, Decimal]


class PlanCatalog(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(ge=1)
    plans: list[Plan] = Field(min_length=1)

    def get(self, name: str) -> Plan | None:
        return next((plan for plan in self.plans if plan.name == name), None)


DEFAULT_PLANS_FILE = Path(__file__).resolve().parents[2] / "infra" / "plans.json"


def load_catalog(path: Path = DEFAULT_PLANS_FILE) -> PlanCatalog:
    return PlanCatalog.model_validate(json.loads(path.read_text()))
