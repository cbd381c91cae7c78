"""The Batch API's use cases: a tenant's files (upload, read, delete) and batches (create,
read, list, cancel). ``BatchWorker`` (gateway/services/batch_worker.py) answers the lines.

Creating a batch tokenizes every line (the gateway counts tokens, as online), so its whole
cost is known, and reserves it, per model at the plan's batch price, in one admission step
each (gateway/lua/admit.lua, lane 'batch': every money and quota check of an online request,
none of its rate buckets or leases). A refusal is the online request's 402 or 429, and a
batch refused on its second model gives the first model's reservation back: never half a
batch. Nothing is charged until a line is answered (gateway/domain/batches.py shares the
reservation out)."""

from __future__ import annotations

import dataclasses
import functools
import json
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError

from gateway.adapters.dynamo.batches import BatchRecords
from gateway.adapters.object_store import ObjectStore
from gateway.domain.admission import Decision, Limiter, Ticket, Verdict
from gateway.domain.batches import CANCELLABLE, BatchStatus
from gateway.domain.plans import Limits
from gateway.errors import (
    ConflictError,
    Error,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitError,
)
from gateway.models.api import EmbeddingsRequest
from gateway.models.batches import (
    BatchLine,
    BatchRecord,
    CreateBatchRequest,
    FileRecord,
    ModelReservation,
    RequestCounts,
)
from gateway.services.auth import Principal
from gateway.services.embeddings import EmbeddingsService
from gateway.services.gate import RequestGate, raise_unless_admitted
from gateway.services.limits import LimitsResolver

WINDOW_S = 24 * 3600  # completion_window "24h"
CHUNK_LINES = 64  # lines the worker answers, charges and records as one step
# A Lambda answers with at most 6 MB: a larger file's content is a redirect to a link (15 min).
INLINE_CONTENT_BYTES = 5 * 1024 * 1024
LINK_S = 900


def new_id(prefix: str) -> str:
    """Sorts by creation time (a batch listing is newest first), then random."""
    return f"{prefix}{time.time_ns() // 1_000_000:012x}{secrets.token_hex(8)}"


def file_object(tenant_id: str, file_id: str) -> str:
    return f"files/{tenant_id}/{file_id}.jsonl"


def plan_object(tenant_id: str, batch_id: str) -> str:
    return f"batches/{tenant_id}/{batch_id}/plan.json"


# Settling reads a ticket's tenant, key, month, tokens and request id, never its limits.
_SETTLING = Limits(requests_per_minute=1, tokens_per_minute=1, monthly_tokens=1, max_concurrent_requests=1)


def batch_ticket(tenant_id: str, key_id: str, batch_id: str, month: str, model: str, *, tokens: int) -> Ticket:
    """The ticket of (a share of) a batch's reservation of ``model``, as settle reads it."""
    return Ticket(tenant_id=tenant_id, key_id=key_id, key_expires_ms=0, limits=_SETTLING, tokens=tokens,
                  request_id=f"{batch_id}:{model}", month=month, batch=True)


def reserved(reservation: ModelReservation, *, cost_nano: int, debits: str) -> Decision:
    """The admission decision a share of ``reservation`` settles as."""
    return Decision(verdict=Verdict.OK, requests_remaining=0, requests_reset_s=0, tokens_remaining=0,
                    tokens_reset_s=0, retry_after_s=0, cost_nano=cost_nano, debits=debits,
                    key_holds=reservation.key_holds)


@dataclass(frozen=True, slots=True)
class PlannedLine:
    custom_id: str
    model: str
    tokens: int


def read_lines(data: bytes) -> list[BatchLine]:
    """An input file's lines, each checked; a bad one is a 400 naming its line number."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequestError("The file is not UTF-8 text (JSONL).", param="file",
                                  code="invalid_file_format") from None
    lines: list[BatchLine] = []
    seen: set[str] = set()
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            line = BatchLine.model_validate(json.loads(raw))
            EmbeddingsRequest.model_validate(line.body)
        except (ValueError, RecursionError) as error:
            detail = error.errors()[0] if isinstance(error, ValidationError) else None
            where = ".".join(str(p) for p in detail["loc"]) if detail else ""
            message = f"{where}: {detail['msg']}" if detail else "not a JSON object"
            raise InvalidRequestError(f"Line {number} is not a valid batch request ({message}).",
                                      param=f"line {number}", code="invalid_batch_line") from None
        if line.custom_id in seen:
            raise InvalidRequestError(f"Line {number}: custom_id '{line.custom_id}' is used twice; each must be "
                                      "unique in the file.", param=f"line {number}", code="duplicate_custom_id")
        seen.add(line.custom_id)
        lines.append(line)
    if not lines:
        raise InvalidRequestError("The file has no requests.", param="file", code="empty_file")
    return lines


class BatchService:
    def __init__(self, *, records: BatchRecords, store: ObjectStore, limiter: Limiter, gate: RequestGate,
                 limits: LimitsResolver, embeddings: EmbeddingsService) -> None:
        self.records = records
        self.store = store
        self.limiter = limiter
        self.gate = gate
        self.limits = limits
        self.embeddings = embeddings

    # -- files ---------------------------------------------------------------------------
    def upload_file(self, principal: Principal, *, filename: str, purpose: str, data: bytes) -> FileRecord:
        if purpose != "batch":
            raise InvalidRequestError("Only purpose 'batch' is accepted.", param="purpose")
        policy = self.limits.plan(principal.tenant.plan).batch
        if len(data) > policy.max_file_bytes:
            raise PayloadTooLargeError(f"The file is over {policy.max_file_bytes} bytes.")
        lines = read_lines(data)
        if len(lines) > policy.max_lines:
            raise InvalidRequestError(f"The file has {len(lines)} requests; at most {policy.max_lines} are allowed.",
                                      param="file", code="too_many_lines")
        record = FileRecord(id=new_id("file-"), tenant_id=principal.tenant.id, bytes=len(data),
                            created_at=int(time.time()), filename=filename[:255] or "batch.jsonl", purpose="batch",
                            lines=len(lines))
        self.store.put(file_object(record.tenant_id, record.id), data)
        self.records.create_file(record)
        return record

    def get_file(self, principal: Principal, file_id: str) -> FileRecord:
        record = self.records.get_file(principal.tenant.id, file_id)
        if record is None:
            raise NotFoundError(f"No such file: '{file_id}'.", param="file_id", code="file_not_found")
        return record

    def _content(self, record: FileRecord) -> bytes:
        data = self.store.get(file_object(record.tenant_id, record.id))
        if data is None:
            raise NotFoundError(f"The content of '{record.id}' is gone.", param="file_id", code="file_not_found")
        return data

    def content_or_link(self, principal: Principal, file_id: str) -> bytes | str:
        """The file's bytes, or, for a file larger than a Lambda may answer with, a short-lived
        link that serves it (S3's presigned URL; the local file server's)."""
        record = self.get_file(principal, file_id)
        if record.bytes > INLINE_CONTENT_BYTES:
            link = self.store.url(file_object(record.tenant_id, record.id), expires_s=LINK_S)
            if link is None:
                raise PayloadTooLargeError(f"'{file_id}' is {record.bytes} bytes, more than this API answers with "
                                           "directly, and its store serves no links.")
            return link
        return self._content(record)

    def delete_file(self, principal: Principal, file_id: str) -> dict[str, object]:
        record = self.get_file(principal, file_id)
        self.records.delete_file(record)
        self.store.delete(file_object(record.tenant_id, record.id))
        return {"id": record.id, "object": "file", "deleted": True}

    # -- batches -------------------------------------------------------------------------
    def create_batch(self, principal: Principal, request: CreateBatchRequest) -> BatchRecord:
        tenant = principal.tenant
        source = self.get_file(principal, request.input_file_id)
        if source.purpose != "batch":
            raise InvalidRequestError("The input file's purpose is not 'batch'.", param="input_file_id")
        plan = self.limits.plan(tenant.plan)
        if sum(1 for t, _ in self.records.active() if t == tenant.id) >= plan.batch.max_active_batches:
            raise RateLimitError(f"At most {plan.batch.max_active_batches} batches may be in progress at once; "
                                 "wait for one to finish.", code="too_many_batches", headers={"Retry-After": "60"})
        planned = self._plan(principal, read_lines(self._content(source)))

        batch_id = new_id("batch_")
        now = datetime.now(UTC)
        reservations = self._reserve(principal, batch_id, now.strftime("%Y-%m"), planned)
        created = int(now.timestamp())
        record = BatchRecord(
            id=batch_id, tenant_id=tenant.id, key_id=principal.key.id, input_file_id=source.id,
            status=BatchStatus.IN_PROGRESS, metadata=request.metadata, created_at=created, in_progress_at=created,
            expires_at=created + WINDOW_S, month=now.strftime("%Y-%m"), reservations=reservations,
            chunk_lines=CHUNK_LINES, total_tokens=sum(line.tokens for line in planned),
            request_counts=RequestCounts(total=len(planned)))
        try:
            self.store.put(plan_object(tenant.id, batch_id),
                           json.dumps([[line.custom_id, line.model, line.tokens] for line in planned]).encode())
            self.records.create_batch(record)
        except Exception:
            self.release(record, reservations)
            raise
        return record

    def _plan(self, principal: Principal, lines: list[BatchLine]) -> list[PlannedLine]:
        """Every line tokenized and checked as an online request would be (its model in the
        plan, its size), but for the online per-minute capacity, which batches do not use."""
        limits = self.limits.for_tenant(principal.tenant)
        plan = self.limits.plan(principal.tenant.plan)
        planned = []
        for number, line in enumerate(lines, 1):
            request = EmbeddingsRequest.model_validate(line.body)
            try:
                spec, input_ids = self.embeddings.tokenize(request, principal, limits, plan, online=False)
            except Error as error:
                if error.status >= 500:
                    raise
                # The online request's own answer (400, 403 model_not_allowed, 404), naming the line.
                raise type(error)(f"Line {number} ({line.custom_id}): {error.message}", param=f"line {number}",
                                  code=error.code) from None
            planned.append(PlannedLine(line.custom_id, spec.id, sum(len(ids) for ids in input_ids)))
        return planned

    def _reserve(self, principal: Principal, batch_id: str, month: str,
                 planned: list[PlannedLine]) -> list[ModelReservation]:
        limits = self.limits.for_tenant(principal.tenant)
        plan = self.limits.plan(principal.tenant.plan)
        models = sorted({line.model for line in planned})
        taken: list[ModelReservation] = []
        for model in models:
            pricing = plan.batch_pricing(model)
            ticket = dataclasses.replace(
                batch_ticket(principal.tenant.id, principal.key.id, batch_id, month, model,
                             tokens=sum(line.tokens for line in planned if line.model == model)),
                key_expires_ms=principal.key.expires_ms(), limits=limits, pricing=pricing)
            decision = self.gate.decide(functools.partial(self.limiter.admit, ticket), principal.tenant.id)
            if decision.verdict is not Verdict.OK:
                self._give_back(principal.tenant.id, principal.key.id, batch_id, month, taken)
                raise_unless_admitted(decision, limits, principal.key.limits)
            taken.append(ModelReservation(model=model, cost_nano=decision.cost_nano,
                                          tier_tokens=list(decision.tier_tokens), debits=decision.debits,
                                          key_holds=decision.key_holds, prices=[nano for _, nano in pricing]))
        return taken

    def _give_back(self, tenant_id: str, key_id: str, batch_id: str, month: str,
                   taken: list[ModelReservation]) -> None:
        for reservation in taken:
            ticket = batch_ticket(tenant_id, key_id, batch_id, month, reservation.model,
                                  tokens=sum(reservation.tier_tokens))
            decision = reserved(reservation, cost_nano=reservation.cost_nano, debits=reservation.debits)
            self.limiter.settle(ticket, decision, charge=False, once=f"{batch_id}:{reservation.model}:unmade")

    def release(self, record: BatchRecord, taken: list[ModelReservation]) -> None:
        """A batch that could not be stored gives its reservations back."""
        self._give_back(record.tenant_id, record.key_id, record.id, record.month, taken)

    def get_batch(self, principal: Principal, batch_id: str) -> BatchRecord:
        record = self.records.get_batch(principal.tenant.id, batch_id)
        if record is None:
            raise NotFoundError(f"No such batch: '{batch_id}'.", param="batch_id", code="batch_not_found")
        return record

    def list_batches(self, principal: Principal, *, after: str | None, limit: int) -> tuple[list[BatchRecord], bool]:
        return self.records.list_batches(principal.tenant.id, after=after, limit=limit)

    def cancel_batch(self, principal: Principal, batch_id: str) -> BatchRecord:
        """The worker gives the lines not yet answered back and writes the files; until then
        the batch reads 'cancelling'."""
        for _ in range(5):
            record = self.get_batch(principal, batch_id)
            if record.status not in CANCELLABLE:
                if record.status in (BatchStatus.CANCELLING, BatchStatus.CANCELLED):
                    return record
                raise ConflictError(f"A batch that is {record.status} cannot be cancelled.",
                                    code="batch_not_cancellable")
            cancelling = record.model_copy(update={"status": BatchStatus.CANCELLING,
                                                   "cancelling_at": int(time.time())})
            try:
                self.records.replace_batch(cancelling, record)
                return cancelling
            except ConflictError:
                continue  # the worker recorded a chunk meanwhile: read it again
        raise ConflictError("The batch changed too often to cancel; retry.", code="concurrent_update")


