"""Request bodies of the public API, validated with pydantic."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
)

from gateway.domain.plans import LimitOverrides
from gateway.domain.scopes import Scope

TokenIds = list[StrictInt]
EmbeddingInput = StrictStr | list[StrictStr] | TokenIds | list[TokenIds]


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: StrictStr
    input: EmbeddingInput
    encoding_format: Literal["float", "base64"] = "float"
    user: StrictStr | None = None
    dimensions: StrictInt | None = None
    truncate: StrictBool = False

    @field_validator("input")
    @classmethod
    def _not_empty(cls, value: EmbeddingInput) -> EmbeddingInput:
        if isinstance(value, str):
            value = [value]
        if not value:
            raise ValueError("input must not be empty")
        for index, item in enumerate(value):
            if (isinstance(item, str) and not item) or (isinstance(item, list) and not item):
                raise ValueError(f"input[{index}] must not be empty")
            if isinstance(item, str) and not item.isascii():
                try:  # JSON may carry lone surrogates ("\ud800"); no tokenizer takes them
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    raise ValueError(f"input[{index}] is not valid Unicode text") from None
        return value

    def texts_or_ids(self) -> tuple[list[str] | None, list[list[int]] | None]:
        """Normalises the four input shapes to a list of texts or a list of id lists."""
        value = self.input
        if isinstance(value, str):
            return [value], None
        texts = [item for item in value if isinstance(item, str)]
        if len(texts) == len(value):
            return texts, None
        ids = [item for item in value if isinstance(item, int)]
        if len(ids) == len(value):
            return None, [ids]
        lists = [list(item) for item in value if isinstance(item, list)]
        if len(lists) == len(value):
            return None, lists
        raise ValueError("input mixes texts and token ids")


def _printable(value: str | None) -> str | None:
    """Names and plans are shown in tables and stored in DynamoDB: valid Unicode only (no
    lone surrogates, no U+FFFD: API Gateway hands a non-UTF-8 body over with its bad bytes
    replaced by it) and no control characters."""
    if value is None:
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    if "\ufffd" in value:
        raise ValueError("must be valid UTF-8 text (it holds U+FFFD, the mark of undecodable bytes)")
    if any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in value):
        raise ValueError("must not contain control characters")
    return value


Name = Annotated[StrictStr, Field(min_length=1, max_length=200), AfterValidator(_printable)]
PlanName = Annotated[StrictStr, Field(min_length=1, max_length=64), AfterValidator(_printable)]
# Far enough for any real key, near enough that every later conversion stays in range.
LATEST_EXPIRY = datetime(9000, 1, 1, tzinfo=UTC)


class CreateTenant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    plan: PlanName


class BudgetBody(BaseModel):
    """A monthly money budget as the API takes it; the amount is checked as money in the
    tenant's currency by the billing service."""

    model_config = ConfigDict(extra="forbid")

    monthly_amount: StrictStr
    hard: StrictBool = False
    alert_thresholds: Annotated[list[StrictFloat | StrictInt], Field(max_length=10)] = []

    @field_validator("alert_thresholds")
    @classmethod
    def _fractions(cls, value: list[float | int]) -> list[float | int]:
        for threshold in value:
            if not 0 < threshold <= 1:
                raise ValueError("each threshold is a fraction in (0, 1], e.g. [0.5, 0.8, 1.0]")
        return value


class BillingBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["prepaid", "postpaid"] | None = None
    low_balance_alert: StrictStr | None = None  # null removes the alert


class UpdateTenant(BaseModel):
    """A partial update: absent fields stay; in ``limits`` a field set to null drops that
    override (the plan's value applies again); ``budget: null`` removes the budget."""

    model_config = ConfigDict(extra="forbid")

    plan: PlanName | None = None
    status: Literal["active", "suspended"] | None = None
    limits: LimitOverrides | None = None
    billing: BillingBody | None = None
    budget: BudgetBody | None = None


def _future_rfc3339(value: object) -> object:
    # RFC 3339 text only: no Unix numbers, no bare dates.
    if value is not None and not (isinstance(value, str) and "T" in value.upper()):
        raise ValueError("expires_at must be an RFC 3339 date-time, e.g. 2030-01-31T00:00:00Z")
    return value


def _aware_future(value: datetime | None) -> datetime | None:
    if value is None:
        return value
    if value.tzinfo is None:
        raise ValueError("expires_at must be RFC 3339 with a time zone offset")
    try:
        moment = value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError("expires_at is out of range") from None
    if moment <= datetime.now(UTC):
        raise ValueError("expires_at must be in the future")
    if moment >= LATEST_EXPIRY:
        raise ValueError("expires_at must be before 9000-01-01T00:00:00Z")
    return moment


Expiry = Annotated[datetime | None, BeforeValidator(_future_rfc3339), AfterValidator(_aware_future)]
KeyName = Annotated[StrictStr, Field(max_length=200), AfterValidator(_printable)]


class CreateKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: KeyName | None = None
    scopes: Annotated[list[Scope], Field(min_length=1, max_length=4)] = [Scope.INFERENCE, Scope.USAGE_READ]
    expires_at: Expiry = None
    # The four limits of a plan, each optional, applied on top of the tenant's.
    limits: LimitOverrides | None = None
    budget: BudgetBody | None = None

    @field_validator("scopes", mode="before")
    @classmethod
    def _strings_only(cls, value: object) -> object:
        if isinstance(value, list) and not all(isinstance(item, str) for item in value):
            raise ValueError("scopes must be a list of strings")
        return value

    @field_validator("scopes")
    @classmethod
    def _distinct(cls, value: list[Scope]) -> list[Scope]:
        return list(dict.fromkeys(value))


class RotateKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_seconds: Annotated[StrictInt, Field(ge=0, le=30 * 86400)] = 0


class UpdateKey(BaseModel):
    """A partial update of a key: absent fields stay; ``budget: null`` removes the budget and a
    limit set to null drops it."""

    model_config = ConfigDict(extra="forbid")

    name: KeyName | None = None
    limits: LimitOverrides | None = None
    budget: BudgetBody | None = None


class CreateCredit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: StrictStr  # a decimal string in the tenant's currency, checked as money by the service
    expires_at: Expiry = None
    note: Annotated[StrictStr, Field(max_length=500), AfterValidator(_printable)] | None = None
