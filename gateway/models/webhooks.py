"""Request bodies of the webhooks API (CONTRACT.md §8)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator

from gateway.domain.events import EventType
from gateway.domain.webhooks import MAX_URL_LENGTH


class CreateWebhook(BaseModel):
    """``url`` is checked further by the service (https, and in AWS a public address);
    ``events`` are event types, at least one, each once."""

    model_config = ConfigDict(extra="forbid")

    url: Annotated[StrictStr, Field(min_length=1, max_length=MAX_URL_LENGTH)]
    events: Annotated[list[EventType], Field(min_length=1, max_length=64)]

    @field_validator("events", mode="before")
    @classmethod
    def _strings_only(cls, value: object) -> object:
        if isinstance(value, list) and not all(isinstance(item, str) for item in value):
            raise ValueError("events must be a list of event type names")
        return value

    @field_validator("events")
    @classmethod
    def _distinct(cls, value: list[EventType]) -> list[EventType]:
        return list(dict.fromkeys(value))
