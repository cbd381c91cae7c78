"""The Batch API's stored records (files and batches) and request bodies, in OpenAI's shapes:
``public()`` is exactly what the API returns, the rest is ours (owner, reservation, progress)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from gateway.domain.batches import BatchStatus, Reservation

ENDPOINT = "/v1/embeddings"


class FileRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    tenant_id: str
    bytes: int
    created_at: int  # unix seconds
    filename: str
    purpose: Literal["batch", "batch_output"]
    lines: int = 0

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "object": "file", "bytes": self.bytes, "created_at": self.created_at,
                "filename": self.filename, "purpose": self.purpose, "status": "processed", "status_details": None}


class ModelReservation(BaseModel):
    """What admission reserved for one model's lines of a batch."""

    model_config = ConfigDict(extra="forbid")

    model: str
    cost_nano: int
    tier_tokens: list[int]
    debits: str
    key_holds: str
    prices: list[int]  # nano per token of each batch tier, as tier_tokens counts them

    def reservation(self) -> Reservation:
        return Reservation(cost_nano=self.cost_nano, tier_tokens=tuple(self.tier_tokens), debits=self.debits)


class RequestCounts(BaseModel):
    total: int = 0
    completed: int = 0
    failed: int = 0


class BatchRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    tenant_id: str
    key_id: str
    input_file_id: str
    completion_window: str = "24h"
    status: BatchStatus
    metadata: dict[str, str] | None = None
    created_at: int
    expires_at: int
    in_progress_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    request_counts: RequestCounts = Field(default_factory=RequestCounts)
    # Ours: the month the reservation was taken in, per model; the chunks answered so far.
    month: str
    reservations: list[ModelReservation] = Field(default_factory=list)
    chunk_lines: int = 64
    chunks_done: int = 0
    total_tokens: int = 0

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "object": "batch", "endpoint": ENDPOINT, "errors": None,
                "input_file_id": self.input_file_id, "completion_window": self.completion_window,
                "status": str(self.status), "output_file_id": self.output_file_id,
                "error_file_id": self.error_file_id, "created_at": self.created_at,
                "in_progress_at": self.in_progress_at, "expires_at": self.expires_at,
                "finalizing_at": self.finalizing_at, "completed_at": self.completed_at,
                "failed_at": self.failed_at, "expired_at": self.expired_at, "cancelling_at": self.cancelling_at,
                "cancelled_at": self.cancelled_at, "request_counts": self.request_counts.model_dump(),
                "metadata": self.metadata}


class CreateBatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_file_id: StrictStr = Field(min_length=1, max_length=64)
    endpoint: Literal["/v1/embeddings"]
    completion_window: Literal["24h"]
    metadata: dict[StrictStr, StrictStr] | None = Field(default=None, max_length=16)


class BatchLine(BaseModel):
    """One line of an input file."""

    model_config = ConfigDict(extra="forbid")

    custom_id: StrictStr = Field(min_length=1, max_length=512)
    method: Literal["POST"]
    url: Literal["/v1/embeddings"]
    body: dict[str, Any]
