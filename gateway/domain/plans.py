"""Plans, limits and prices. Plans live in a versioned file (infra/plans.json), are
validated here at load and copied into the table by ``maas admin bootstrap``."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator, model_validator

from gateway.domain.money import CURRENCIES, NANO, PRICE_PLACES, Tiers, fmt, nano_per_token

# An uploaded batch file's ceiling: a Lambda's 6 MB request payload, less multipart framing.
MAX_BATCH_FILE_BYTES = 5 * 1024 * 1024

# Bucket arithmetic in Redis is exact in doubles while rate x 60000 stays below 2**53.
# Strict: "100", true or " 5 " are not numbers (an admin's typo must be a 400, not a guess).
RatePerMinute = Annotated[StrictInt, Field(gt=0, le=10**9)]
TokenAmount = Annotated[StrictInt, Field(gt=0, le=10**15)]
SlotCount = Annotated[StrictInt, Field(gt=0, le=10**6)]
# The API's own ceiling: 2,048 inputs of the model's 256 tokens.
API_MAX_REQUEST_TOKENS = 2048 * 256
RequestTokens = Annotated[StrictInt, Field(gt=0, le=API_MAX_REQUEST_TOKENS)]


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    requests_per_minute: RatePerMinute
    tokens_per_minute: RatePerMinute
    monthly_tokens: TokenAmount
    max_concurrent_requests: SlotCount
    # The largest request the plan takes, in tokens: sized so that it completes well inside the
    # gateway's deadline (docs/BENCHMARKS.md). Plans stored before it existed take the API's own.
    max_request_tokens: RequestTokens = API_MAX_REQUEST_TOKENS


class LimitOverrides(BaseModel):
    """An admin's partial override of a plan's limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests_per_minute: RatePerMinute | None = None
    tokens_per_minute: RatePerMinute | None = None
    monthly_tokens: TokenAmount | None = None
    max_concurrent_requests: SlotCount | None = None
    max_request_tokens: RequestTokens | None = None

    def apply(self, limits: Limits) -> Limits:
        return limits.model_copy(update=self.model_dump(exclude_none=True))


def _price(value: Decimal) -> Decimal:
    if value < 0 or -int(value.as_tuple().exponent) > PRICE_PLACES and value != round(value, PRICE_PLACES):
        raise ValueError(f"a price per 1,000 tokens is >= 0 with at most {PRICE_PLACES} decimals")
    return value


Price = Annotated[Decimal, Field(allow_inf_nan=False)]


class Tier(BaseModel):
    """Tokens of the calendar month up to ``up_to`` (None: all the rest) cost this much."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    up_to: Annotated[int, Field(gt=0)] | None
    price_per_1k_tokens: Price

    _checked = field_validator("price_per_1k_tokens")(_price)


class BatchPolicy(BaseModel):
    """A plan's Batch API limits (OpenAI's own by default, but for the file size: what one
    API Gateway request to a Lambda carries)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_lines: Annotated[StrictInt, Field(gt=0, le=50_000)] = 50_000
    max_file_bytes: Annotated[StrictInt, Field(gt=0, le=MAX_BATCH_FILE_BYTES)] = MAX_BATCH_FILE_BYTES
    # Batches of a tenant in progress at once (they never take the online request buckets).
    max_active_batches: Annotated[StrictInt, Field(gt=0, le=1000)] = 4


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    currency: str = "USD"
    limits: Limits
    # Per model id, a flat price per 1,000 prompt tokens, or graduated tiers over the tenant's
    # tokens of the calendar month; exact decimals, never floats.
    price_per_1k_tokens: dict[str, Price] = Field(default_factory=dict)
    tiers: dict[str, list[Tier]] = Field(default_factory=dict)
    # The Batch API's price per model (flat, per 1,000 tokens); a model not listed costs half
    # its online price (each tier's, when graduated), in whole nano units per token, rounded down.
    batch_price_per_1k_tokens: dict[str, Price] = Field(default_factory=dict)
    batch: BatchPolicy = BatchPolicy()

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, value: str) -> str:
        if value not in CURRENCIES:
            raise ValueError(f"unknown currency {value!r}")
        return value

    @field_validator("price_per_1k_tokens")
    @classmethod
    def _prices(cls, value: dict[str, Decimal]) -> dict[str, Decimal]:
        return {model: _price(price) for model, price in value.items()}

    @field_validator("batch_price_per_1k_tokens")
    @classmethod
    def _batch_prices(cls, value: dict[str, Decimal]) -> dict[str, Decimal]:
        return {model: _price(price) for model, price in value.items()}

    @field_validator("tiers")
    @classmethod
    def _ascending_tiers(cls, value: dict[str, list[Tier]]) -> dict[str, list[Tier]]:
        for model, tiers in value.items():
            if not tiers or tiers[-1].up_to is not None:
                raise ValueError(f"{model}: tiers end with one whose up_to is null")
            bounds = [t.up_to for t in tiers[:-1] if t.up_to is not None]
            if len(bounds) != len(tiers) - 1 or bounds != sorted(set(bounds)):
                raise ValueError(f"{model}: only the last tier is unbounded, and up_to must rise")
        return value

    @model_validator(mode="after")
    def _one_price_per_model(self) -> Self:
        both = set(self.price_per_1k_tokens) & set(self.tiers)
        if both:
            raise ValueError(f"{sorted(both)}: a model has a flat price or tiers, not both")
        return self

    def includes(self, model: str) -> bool:
        """A plan includes the models it prices (a price of "0" included: free)."""
        return model in self.price_per_1k_tokens or model in self.tiers

    def price_listing(self, model: str) -> str | list[dict[str, Any]]:
        """The model's price per 1,000 tokens as a decimal string, or its tiers."""
        if model in self.tiers:
            return [{"up_to": t.up_to, "price_per_1k_tokens": str(t.price_per_1k_tokens)} for t in self.tiers[model]]
        return str(self.price_per_1k_tokens.get(model, Decimal(0)))

    def pricing(self, model: str) -> Tiers:
        """The model's price as tiers of (up to, nano per token); a flat price is one tier.
        A model the plan does not price is free (admission refuses it first: ``includes``)."""
        if model in self.tiers:
            return [(t.up_to, nano_per_token(t.price_per_1k_tokens)) for t in self.tiers[model]]
        return [(None, nano_per_token(self.price_per_1k_tokens.get(model, Decimal(0))))]

    def batch_pricing(self, model: str) -> Tiers:
        """The model's Batch API price, as ``pricing`` gives the online one."""
        if model in self.batch_price_per_1k_tokens:
            return [(None, nano_per_token(self.batch_price_per_1k_tokens[model]))]
        return [(up_to, nano // 2) for up_to, nano in self.pricing(model)]

    def batch_price_listing(self, model: str) -> str | list[dict[str, Any]]:
        """``price_listing`` for the Batch API."""
        tiers = self.batch_pricing(model)
        listed = [{"up_to": up_to, "price_per_1k_tokens": fmt(Decimal(nano) * 1000 / NANO)} for up_to, nano in tiers]
        if model in self.tiers and model not in self.batch_price_per_1k_tokens:
            return listed
        return str(listed[0]["price_per_1k_tokens"])


class Budget(BaseModel):
    """A monthly money budget: hard refuses the request that would pass it (402), soft only
    alerts. Thresholds are fractions of the amount in (0, 1], each alerted once a month."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    monthly_amount: Decimal
    hard: StrictBool = False
    alert_thresholds: list[Decimal] = Field(default_factory=list, max_length=10)

    @field_validator("alert_thresholds")
    @classmethod
    def _fractions(cls, value: list[Decimal]) -> list[Decimal]:
        for threshold in value:
            if not Decimal(0) < threshold <= Decimal(1):
                raise ValueError("each threshold is a fraction in (0, 1]")
        return sorted(set(value))


class BillingMode(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["prepaid", "postpaid"] = "postpaid"
    low_balance_alert: Decimal | None = None



class PlanCatalog(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(ge=1)
    plans: list[Plan] = Field(min_length=1)

    def get(self, name: str) -> Plan | None:
        return next((plan for plan in self.plans if plan.name == name), None)


DEFAULT_PLANS_FILE = Path(__file__).resolve().parents[2] / "infra" / "plans.json"


def load_catalog(path: Path = DEFAULT_PLANS_FILE) -> PlanCatalog:
    return PlanCatalog.model_validate(json.loads(path.read_text()))
