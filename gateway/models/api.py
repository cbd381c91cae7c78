"""Request bodies of the public API, validated with pydantic."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator

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
        return value

    def texts_or_ids(self) -> tuple[list[str] | None, list[list[int]] | None]:
        """Normalises the four input shapes to a list of texts or a list of id lists."""
        value = self.input
        if isinstance(value, str):
            return [value], None
        if all(isinstance(item, str) for item in value):
            return list(value), None  # type: ignore[arg-type]
        if all(isinstance(item, int) for item in value):
            return None, [list(value)]  # type: ignore[list-item]
        if all(isinstance(item, list) for item in value):
            return None, [list(item) for item in value]  # type: ignore[union-attr]
        raise ValueError("input mixes texts and token ids")


Name = Annotated[str, Field(min_length=1, max_length=200)]


class CreateTenant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    plan: Annotated[str, Field(min_length=1, max_length=64)]


class UpdateTenant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plan: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    status: Literal["active", "suspended"] | None = None
    limits: LimitOverrides | None = None


class CreateKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(max_length=200)] | None = None
    scopes: Annotated[list[Scope], Field(min_length=1, max_length=4)] = [Scope.INFERENCE, Scope.USAGE_READ]
    expires_at: datetime | None = None

    @field_validator("expires_at")
    @classmethod
    def _aware_future(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("expires_at must be RFC 3339 with a time zone offset")
        if value is not None and value <= datetime.now(value.tzinfo):
            raise ValueError("expires_at must be in the future")
        return value


class RotateKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_seconds: Annotated[StrictInt, Field(ge=0, le=30 * 86400)] = 0
