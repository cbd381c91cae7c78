"""Scheduling: a dynamic batcher in front of one model session.

Requests queue (bounded: ``max_queue``, else ``OverloadedError`` → 503 + Retry-After). Each
scheduling round takes queued requests in arrival order while their tokens fit
``max_batch_tokens``, waiting at most ``max_wait`` after the oldest one arrived for
batch-mates (no wait at all once the budget is full, when it already waited while the model
was busy, or when no other request is in flight: a lone request goes straight to the model).
A request larger than what is left of the budget contributes its shortest remaining items and
goes back to the end of the queue, so a 2,048-item request shares the model with the small
ones that arrive meanwhile instead of holding it for its whole length. The items of a round
are sorted by length and cut into model calls whose padded size (items × longest) fits the
budget, a new call starting where padding would cost more than a call, so padding stays
small; results are scattered back per request. Compute runs in one worker thread so the event
loop stays responsive. A model call that fails is retried request by request, so one bad
request never fails its batch-mates. ``close()`` stops admission; ``drain()`` finishes what
is queued.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from inference_image.server.errors import (
    ComputeError,
    DeadlineExceededError,
    InferenceError,
    OverloadedError,
    UnavailableError,
)
from inference_image.server.metrics import Metrics

log = logging.getLogger("inference_image.batcher")

Execute = Callable[[np.ndarray, np.ndarray], np.ndarray]
_Item = tuple[int, int, int]  # (length, index of the job in the round, index of the item)


@dataclass
class Result:
    embeddings: np.ndarray
    queue_s: float
    compute_s: float


@dataclass(eq=False)
class _Job:
    ids: Sequence[Sequence[int]]
    order: list[int]  # item indices, shortest first
    remaining_tokens: int
    deadline: float
    enqueued: float
    future: asyncio.Future[Result]
    out: np.ndarray
    cursor: int = 0  # items of ``order`` handed to a round so far
    abandoned: bool = False
    started: float = 0.0
    error: InferenceError | None = None
    compute_s: float = field(default=0.0)
    early: bool = False  # answered from the worker thread before its round ended

    @property
    def complete(self) -> bool:
        return self.cursor >= len(self.order)


class Batcher:
    def __init__(self, execute: Execute, *, dim: int, max_batch_tokens: int,
                 max_batch_items: int, max_wait_s: float, max_queue: int,
                 metrics: Metrics, call_overhead_tokens: int = 32) -> None:
        self._execute = execute
        self._dim = dim
        self._budget = max_batch_tokens
        self._max_items = max_batch_items
        self._max_wait = max_wait_s
        self._max_queue = max_queue
        self._call_overhead = call_overhead_tokens
        self._metrics = metrics
        self._pending: deque[_Job] = deque()
        self._wakeup = asyncio.Event()
        self._closing = False
        self._active = 0  # submitted and not yet answered
        self._task: asyncio.Task[None] | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="maas-compute")

    # -- admission -----------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="maas-batcher")

    @property
    def accepting(self) -> bool:
        return not self._closing

    async def submit(self, ids: Sequence[Sequence[int]], timeout_s: float) -> Result:
        """Embed ``ids`` (already validated); raises an InferenceError on overload/deadline."""
        if self._closing:
            raise UnavailableError("server is shutting down", code="shutting_down")
        if len(self._pending) >= self._max_queue:
            raise OverloadedError(
                f"inference queue is full ({self._max_queue} requests waiting); retry later")
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        lengths = [len(x) for x in ids]
        job = _Job(ids=ids, order=sorted(range(len(ids)), key=lengths.__getitem__),
                   remaining_tokens=sum(lengths), deadline=now + timeout_s, enqueued=now,
                   future=loop.create_future(),
                   out=np.empty((len(ids), self._dim), dtype=np.float32))
        self._pending.append(job)
        self._metrics.queue_depth.set(len(self._pending))
        self._wakeup.set()
        self._active += 1
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), timeout_s)
        except TimeoutError:
            job.abandoned = True
            raise DeadlineExceededError(
                f"request did not complete within its deadline of {timeout_s * 1000:.0f} ms"
            ) from None
        except asyncio.CancelledError:
            job.abandoned = True  # the client went away: nobody waits for it any more
            raise
        finally:
            self._active -= 1

    # -- scheduling ----------------------------------------------------------------------
    def _queued_tokens(self) -> int:
        return sum(j.remaining_tokens for j in self._pending)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            # Give the oldest request up to max_wait for batch-mates, unless the budget is full
            # or no other request is in flight (a lone request goes straight to the model).
            wait_until = self._pending[0].enqueued + self._max_wait
            while (not self._closing and self._active > 1
                   and self._queued_tokens() < self._budget):
                remaining = wait_until - time.monotonic()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except TimeoutError:
                    break
            taken = self._take()
            self._metrics.queue_depth.set(len(self._pending))
            if not taken:
                continue
            self._metrics.batch_requests.observe(len(taken))
            try:
                await loop.run_in_executor(self._pool, self._compute, taken, loop)
            except Exception as exc:  # noqa: BLE001 - never let the scheduler die
                log.exception("batch failed")
                for job, _ in taken:
                    if job.error is None:
                        job.error = ComputeError(f"inference failed: {type(exc).__name__}")
            for job, _ in taken:
                if job.future.done():
                    continue
                if job.error is not None:
                    job.future.set_exception(job.error)
                elif not job.complete:
                    if not job.abandoned:
                        self._pending.append(job)  # the rest waits its turn behind newer work
                        self._metrics.queue_depth.set(len(self._pending))
                else:
                    self._finish(job)

    def _take(self) -> list[tuple[_Job, list[int]]]:
        """Items for one round: queued jobs in arrival order, their shortest remaining items
        first, while the tokens fit the budget (at least one item)."""
        now = time.monotonic()
        taken: list[tuple[_Job, list[int]]] = []
        tokens = 0
        while self._pending and tokens < self._budget:
            job = self._pending[0]
            if job.abandoned or job.deadline <= now:
                self._pending.popleft()
                if not job.future.done():
                    job.future.set_exception(DeadlineExceededError(
                        "request expired while queued"))
                continue
            items: list[int] = []
            while not job.complete:
                i = job.order[job.cursor]
                n = len(job.ids[i])
                if tokens + n > self._budget and (tokens or items):
                    break
                items.append(i)
                tokens += n
                job.cursor += 1
                job.remaining_tokens -= n
            if not items:
                break  # its next item does not fit this round; it stays first in line
            self._pending.popleft()
            if not job.started:
                job.started = now
            taken.append((job, items))
        return taken

    # -- compute (worker thread) -----------------------------------------------------------
    def _chunks(self, items: list[_Item]) -> list[list[_Item]]:
        """Cut length-sorted items into calls with items × longest <= budget.

        A longer item also starts a new call when padding the current call up to it would
        cost more token slots than a call of its own (``call_overhead_tokens``: what one more
        model call costs, in tokens).
        """
        chunks: list[list[_Item]] = []
        current: list[_Item] = []
        for item in items:
            length = item[0]
            if current:
                n, longest = len(current), current[-1][0]
                growth = (n + 1) * length - n * longest
                if ((n + 1) * length > self._budget or n >= self._max_items
                        or growth > self._call_overhead + length):
                    chunks.append(current)
                    current = []
            current.append(item)
        if current:
            chunks.append(current)
        return chunks

    def _run_call(self, rows: Sequence[Sequence[int]]) -> np.ndarray:
        width = max(len(r) for r in rows)
        input_ids = np.zeros((len(rows), width), dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        real = 0
        for i, row in enumerate(rows):
            input_ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
            real += len(row)
        out = self._execute(input_ids, mask)
        slots = len(rows) * width
        m = self._metrics
        m.batch_items.observe(len(rows))
        m.batch_tokens.observe(real)
        m.padding_ratio.observe((slots - real) / slots)
        m.tokens.inc(real)
        m.padded_tokens.inc(slots)
        m.items.inc(len(rows))
        return out

    def _finish(self, job: _Job) -> None:
        """On the event loop: answer a job whose last items just came back."""
        if not job.future.done():
            job.future.set_result(Result(job.out, job.started - job.enqueued, job.compute_s))

    def _compute(self, taken: list[tuple[_Job, list[int]]],
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        t0 = time.monotonic()
        jobs = [job for job, _ in taken]
        left = [len(idxs) for _, idxs in taken]  # this round's items not yet computed
        items = sorted((len(job.ids[i]), j, i) for j, (job, idxs) in enumerate(taken)
                       for i in idxs)
        for chunk in self._chunks(items):
            live = [(n, j, i) for n, j, i in chunk if jobs[j].error is None]
            if not live:
                continue
            try:
                out = self._run_call([jobs[j].ids[i] for _, j, i in live])
            except Exception:  # noqa: BLE001 - isolate: retry each request on its own
                owners = sorted({j for _, j, _ in live})
                if len(owners) == 1:
                    self._fail(jobs[owners[0]])
                    continue
                for j in owners:
                    mine = [i for _, jj, i in live if jj == j]
                    try:
                        sub = self._run_call([jobs[j].ids[i] for i in mine])
                    except Exception:  # noqa: BLE001
                        self._fail(jobs[j])
                        continue
                    jobs[j].out[mine] = sub
                continue
            for row, (_, j, i) in enumerate(live):
                jobs[j].out[i] = out[row]
            # Short items run first: a request whose last items are done is answered now,
            # not when the round's longest call ends.
            for j in {j for _, j, _ in live}:
                left[j] -= sum(1 for _, jj, _ in live if jj == j)
                job = jobs[j]
                if left[j] == 0 and job.complete and job.error is None and loop is not None:
                    job.compute_s += time.monotonic() - t0
                    job.early = True
                    loop.call_soon_threadsafe(self._finish, job)
        elapsed = time.monotonic() - t0
        for job in jobs:
            if not job.early:
                job.compute_s += elapsed

    def _fail(self, job: _Job) -> None:
        log.exception("model call failed for one request")
        self._metrics.errors.labels("compute_error").inc()
        job.error = ComputeError("the model failed on this request's input")

    # -- shutdown ------------------------------------------------------------------------
    def close(self) -> None:
        """Stop admitting; queued and running work still completes."""
        self._closing = True
        self._wakeup.set()

    async def drain(self, timeout_s: float) -> bool:
        """close(), then wait up to ``timeout_s`` for queued work; True when all finished."""
        self.close()
        if self._task is None:
            return True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
            return True
        except TimeoutError:
            log.error("drain timed out with %d requests queued", len(self._pending))
            self._task.cancel()
            while self._pending:
                job = self._pending.popleft()
                if not job.future.done():
                    job.future.set_exception(UnavailableError("server is shutting down"))
            return False
        finally:
            self._pool.shutdown(wait=False)
