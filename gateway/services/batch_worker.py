"""The batch worker: answers each in-progress batch's lines, a chunk at a time, in file order.

One chunk is one step, safe to repeat: its lines are embedded, their answers written as one
object (``.../out/<chunk>.jsonl``, and ``err/`` for lines that failed), their share of the
reservation settled (completed lines charged, their usage event on the tenant's stream under
a request id of the batch and chunk; failed lines given back), and only then the batch's
record says the chunk is done. A worker killed anywhere in between does the chunk again:
the objects are written again with the same lines, and each settlement carries a ``once``
name (settle.lua keeps it in the reservation's month), so nothing is charged or given back
twice; the ledger keys the usage by its request id as well.

A cancelled or expired batch gives every line not yet answered back and lists it in the
error file (``batch_cancelled`` / ``batch_expired``). Then the chunks' objects are joined
into the output and error files, and the batch leaves the worker's index.

A line that the inference service cannot answer right now (503, timeout) stops the pass:
the chunk is tried again on the next one. Lines go to the same container as online requests,
marked background (``priority=batch``): its scheduler serves them only while no online
request of any tenant waits (inference_image/server/batcher.py)."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from gateway.adapters.dynamo.batches import BatchRecords
from gateway.adapters.inference import Embeddings
from gateway.adapters.object_store import ObjectStore
from gateway.domain.admission import Limiter
from gateway.domain.batches import BatchStatus, Shares, chunks, usage_label
from gateway.domain.money import fmt_nano
from gateway.domain.usage import UsageEvent, ledger_shard
from gateway.errors import ConflictError, Error, ServiceUnavailableError, UpstreamError, UpstreamTimeoutError
from gateway.models.api import EmbeddingsRequest
from gateway.models.batches import BatchLine, BatchRecord, FileRecord
from gateway.services.batches import batch_ticket, file_object, plan_object, read_lines, reserved
from gateway.services.embeddings import openai_body
from gateway.telemetry import logger

Transient = (ServiceUnavailableError, UpstreamTimeoutError)


def chunk_object(record: BatchRecord, kind: str, index: int) -> str:
    return f"batches/{record.tenant_id}/{record.id}/{kind}/{index}.jsonl"


def output_file_id(record: BatchRecord, kind: str) -> str:
    """The output (``out``) and error (``err``) files' ids: fixed by the batch, so a resumed
    worker writes the same files again."""
    return f"file-{record.id.removeprefix('batch_')}{kind}"


def _groups(items: list[Any], max_sequences: int = 256, max_tokens: int = 16_384) -> list[list[Any]]:
    """Lines of one model in inference calls of at most this many sequences and tokens (the
    container's batcher splits a call further; a line larger than that is a call of its own)."""
    groups: list[list[Any]] = []
    sequences = tokens = 0
    for item in items:
        line_ids = item[2]
        size = sum(len(ids) for ids in line_ids)
        if groups and sequences + len(line_ids) <= max_sequences and tokens + size <= max_tokens:
            groups[-1].append(item)
            sequences, tokens = sequences + len(line_ids), tokens + size
        else:
            groups.append([item])
            sequences, tokens = len(line_ids), size
    return groups


def _line(record: BatchRecord, number: int, custom_id: str, status: int, body: dict[str, Any],
          error: dict[str, str] | None = None) -> bytes:
    return json.dumps({"id": f"batch_req_{record.id.removeprefix('batch_')}_{number}", "custom_id": custom_id,
                       "response": {"status_code": status, "request_id": f"{record.id}-{number}", "body": body},
                       "error": error}, separators=(",", ":")).encode() + b"\n"


class BatchWorker:
    def __init__(self, *, records: BatchRecords, store: ObjectStore, limiter: Limiter, embed: Callable[..., Any],
                 tokenize: Callable[[EmbeddingsRequest], tuple[str, list[list[int]]]],
                 shards_for: Callable[[str], int], clock: Callable[[], float] = time.time) -> None:
        self.records = records
        self.store = store
        self.limiter = limiter
        self.embed = embed  # InferenceClient.embed
        self.tokenize = tokenize  # a line's request -> (model id, token ids), as at validation
        self.shards_for = shards_for  # tenant id -> its ledger shards
        self.clock = clock
        self._shares_of: str | None = None  # the batch whose reservations' shares are cached, per model
        self._shares: dict[str, Any] = {}

    # -- the loop ----------------------------------------------------------------------------
    def run_forever(self, interval_s: float, stop: threading.Event | None = None) -> None:
        stop = stop or threading.Event()
        while not stop.is_set():
            try:
                busy = self.run_once()
            except Exception:
                logger.exception("batch pass failed; trying again")
                busy = False
            if not busy:
                stop.wait(interval_s)

    def run_once(self, *, until: float | None = None) -> bool:
        """One pass over the batches with work left: True when it did some. No chunk is
        started after ``until`` (the Lambda's deadline)."""
        did = False
        for tenant_id, batch_id in self.records.active():
            record = self.records.get_batch(tenant_id, batch_id)
            if record is None:
                continue
            try:
                did = self.advance(record, until=until) or did
            except Transient as error:
                logger.warning("inference unavailable; batch resumes on the next pass",
                               extra={"batch_id": batch_id, "error": type(error).__name__})
                return did
        return did

    def advance(self, record: BatchRecord, *, until: float | None = None) -> bool:
        """Answer chunks of one batch until it is done (or ``until`` has passed)."""
        plan = json.loads(self.store.get(plan_object(record.tenant_id, record.id)) or b"[]")
        lines: list[BatchLine] | None = None
        done = 0
        while True:
            if record.status is BatchStatus.CANCELLING:
                self._finish(record, plan, BatchStatus.CANCELLED, "batch_cancelled")
                return True
            if self.clock() >= record.expires_at:
                self._finish(record, plan, BatchStatus.EXPIRED, "batch_expired")
                return True
            units = chunks(len(plan), record.chunk_lines)
            if record.chunks_done >= len(units):
                self._finish(record, plan, BatchStatus.COMPLETED, None)
                return True
            if until is not None and self.clock() >= until:
                return done > 0
            if lines is None:
                lines = self._input(record)
            record = self._answer_chunk(record, plan, lines, record.chunks_done, units[record.chunks_done])
            done += 1

    def _input(self, record: BatchRecord) -> list[BatchLine]:
        data = self.store.get(file_object(record.tenant_id, record.input_file_id))
        if data is None:
            raise RuntimeError(f"batch {record.id}: its input file is gone")
        return read_lines(data)

    # -- one chunk ---------------------------------------------------------------------------
    def _answer_chunk(self, record: BatchRecord, plan: list[list[Any]], lines: list[BatchLine], index: int,
                      unit: range) -> BatchRecord:
        out, err = bytearray(), bytearray()
        completed: dict[str, list[int]] = defaultdict(list)  # model -> line numbers
        failed: dict[str, list[int]] = defaultdict(list)
        answers: dict[int, bytes] = {}

        def fail(number: int, model: str, error: Error) -> None:
            answers[number] = _line(record, number, plan[number][0], error.status,
                                    {"error": {"message": error.message, "type": error.type, "code": error.code}},
                                    {"code": str(error.code), "message": error.message})
            failed[model].append(number)

        ready: dict[str, list[tuple[int, EmbeddingsRequest, list[list[int]]]]] = defaultdict(list)
        for number in unit:
            _, model, tokens = plan[number]
            request = EmbeddingsRequest.model_validate(lines[number].body)
            _, input_ids = self.tokenize(request)
            if sum(len(ids) for ids in input_ids) != tokens:
                fail(number, model, UpstreamError("The tokenizer disagreed with the batch's validation."))
                continue
            ready[model].append((number, request, input_ids))
        for model, items in ready.items():
            for group in _groups(items):
                for number, request, vectors in self._embed(record, model, group, fail):
                    tokens = plan[number][2]
                    cost = fmt_nano(self._share(record, plan, model, [number])[1].cost_nano)
                    answers[number] = _line(record, number, plan[number][0], 200,
                                            openai_body(model, vectors, tokens, request.encoding_format, cost))
                    completed[model].append(number)
        refused = {number for numbers in failed.values() for number in numbers}
        for number in unit:
            (err if number in refused else out).extend(answers[number])
        self.store.put(chunk_object(record, "out", index), bytes(out))
        self.store.put(chunk_object(record, "err", index), bytes(err))
        for model, numbers in completed.items():
            self._settle(record, plan, model, numbers, charge=True, name=f"{index}")
        for model, numbers in failed.items():
            self._settle(record, plan, model, numbers, charge=False, name=f"{index}")
        return self._record_progress(record, index, sum(map(len, completed.values())),
                                     sum(map(len, failed.values())))

    def _embed(self, record: BatchRecord, model: str, group: list[tuple[int, EmbeddingsRequest, list[list[int]]]],
               fail: Callable[[int, str, Error], None]) -> list[tuple[int, EmbeddingsRequest, Embeddings]]:
        """One inference call for the group's lines; if the service refuses it, each line alone,
        so that only the line it refuses fails. A transient refusal (503, timeout) is raised."""
        sequences = [ids for _, _, line_ids in group for ids in line_ids]
        try:
            vectors = self.embed(sequences, tenant_id=record.tenant_id, model=model, timeout_s=20.0, background=True)
            if vectors.count != len(sequences):
                raise UpstreamError("the inference service returned a wrong number of embeddings")
        except Transient:
            raise
        except Error as error:
            if len(group) == 1:
                fail(group[0][0], model, error)
                return []
            return [answer for line in group for answer in self._embed(record, model, [line], fail)]
        answers, start = [], 0
        for number, request, line_ids in group:
            stop = start + len(line_ids)
            answers.append((number, request, vectors.slice(start, stop, sum(len(ids) for ids in line_ids))))
            start = stop
        return answers

    def _share(self, record: BatchRecord, plan: list[list[Any]], model: str, numbers: list[int]) -> Any:
        """``model``'s reservation and the share of it that lines ``numbers`` own."""
        if self._shares_of != record.id:
            self._shares_of, self._shares = record.id, {}
        if model not in self._shares:
            reservation = next(r for r in record.reservations if r.model == model)
            model_lines = [n for n, (_, line_model, _) in enumerate(plan) if line_model == model]
            self._shares[model] = (reservation, {n: i for i, n in enumerate(model_lines)},
                                   Shares(reservation.reservation(), reservation.prices,
                                          [plan[n][2] for n in model_lines]))
        reservation, position, shares = self._shares[model]
        return reservation, shares.share([position[n] for n in numbers])

    def _settle(self, record: BatchRecord, plan: list[list[Any]], model: str, numbers: list[int], *,
                charge: bool, name: str) -> None:
        reservation, share = self._share(record, plan, model, numbers)
        if share.empty:
            return
        ticket = batch_ticket(record.tenant_id, record.key_id, record.id, record.month, model, tokens=share.tokens)
        decision = reserved(reservation, cost_nano=share.cost_nano, debits=share.debits)
        event = None
        if charge:
            request_id = f"{record.id}-{name}-{model}"
            event = UsageEvent(request_id=request_id, tenant_id=record.tenant_id, key_id=record.key_id,
                               model=usage_label(model), prompt_tokens=share.tokens,
                               timestamp_ms=int(self.clock() * 1000), cost_nano=share.cost_nano,
                               debits=share.debits, tier_tokens=share.tier_tokens,
                               ledger_shard=ledger_shard(request_id, self.shards_for(record.tenant_id)))
        self.limiter.settle(ticket, decision, charge=charge, event=event,
                            once=f"{record.id}:{name}:{model}:{'c' if charge else 'r'}")

    def _record_progress(self, record: BatchRecord, index: int, completed: int, failed: int) -> BatchRecord:
        """chunks_done moves past ``index`` once, whatever else changed the record (a cancel)."""
        while True:
            if record.chunks_done > index:
                return record
            counts = record.request_counts.model_copy(update={
                "completed": record.request_counts.completed + completed,
                "failed": record.request_counts.failed + failed})
            updated = record.model_copy(update={"chunks_done": index + 1, "request_counts": counts})
            try:
                self.records.replace_batch(updated, record)
                return updated
            except ConflictError:
                fresh = self.records.get_batch(record.tenant_id, record.id)
                if fresh is None:
                    raise
                record = fresh

    # -- the end -----------------------------------------------------------------------------
    def _finish(self, record: BatchRecord, plan: list[list[Any]], status: BatchStatus, code: str | None) -> None:
        units = chunks(len(plan), record.chunk_lines)
        rest = [n for unit in units[record.chunks_done:] for n in unit]
        rest_errors = bytearray()  # the lines never answered: derived again by a resumed worker
        if rest:
            message = {"batch_cancelled": "The batch was cancelled before this request ran.",
                       "batch_expired": "This request did not run within the batch's completion window."}[str(code)]
            by_model: dict[str, list[int]] = defaultdict(list)
            for number in rest:
                rest_errors += _line(record, number, plan[number][0], 499 if code == "batch_cancelled" else 408,
                             {"error": {"message": message, "type": "batch_error", "code": code}},
                             {"code": str(code), "message": message})
                by_model[plan[number][1]].append(number)
            for model, numbers in by_model.items():
                self._settle(record, plan, model, numbers, charge=False, name="rest")
        out = b"".join(self.store.get(chunk_object(record, "out", i)) or b"" for i in range(record.chunks_done))
        errors = b"".join(self.store.get(chunk_object(record, "err", i)) or b""
                          for i in range(record.chunks_done)) + bytes(rest_errors)
        now = int(self.clock())
        files = {}
        for kind, data in (("out", out), ("err", errors)):
            if not data:
                continue
            file = FileRecord(id=output_file_id(record, kind), tenant_id=record.tenant_id, bytes=len(data),
                              created_at=now, filename=f"{record.id}_{'output' if kind == 'out' else 'error'}.jsonl",
                              purpose="batch_output", lines=data.count(b"\n"))
            self.store.put(file_object(record.tenant_id, file.id), data)
            self.records.put_file(file)
            files[kind] = file.id
        stamp = {BatchStatus.COMPLETED: "completed_at", BatchStatus.CANCELLED: "cancelled_at",
                 BatchStatus.EXPIRED: "expired_at"}[status]
        counts = record.request_counts.model_copy(update={"failed": record.request_counts.failed + len(rest)})
        finished = record.model_copy(update={
            "status": status, stamp: now, "finalizing_at": record.finalizing_at or now, "request_counts": counts,
            "output_file_id": files.get("out"), "error_file_id": files.get("err"),
            "chunks_done": len(units)})
        try:
            self.records.replace_batch(finished, record)
        except ConflictError:
            return  # cancelled meanwhile: the next pass finishes it as that (the settlements are once-only)
        logger.info("batch finished", extra={"batch_id": record.id, "status": str(status),
                                             "completed": counts.completed, "failed": counts.failed})
