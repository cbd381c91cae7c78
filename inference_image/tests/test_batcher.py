"""The batcher on a fake model (no ONNX): grouping, order, isolation, limits, draining."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from inference_image.server.batcher import Batcher
from inference_image.server.errors import (
    ComputeError,
    DeadlineExceededError,
    OverloadedError,
    UnavailableError,
)
from inference_image.server.metrics import Metrics

POISON = 666


class FakeModel:
    """Embeds each row as [first id, length, 0, ...]; fails on any batch holding POISON."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[tuple[int, int]] = []
        self.delay = delay

    def __call__(self, input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        assert input_ids.dtype == np.int64 and input_ids.shape == mask.shape
        self.calls.append(input_ids.shape)
        if self.delay:
            time.sleep(self.delay)
        if (input_ids == POISON).any():
            raise RuntimeError("poisoned batch")
        out = np.zeros((input_ids.shape[0], 4), dtype=np.float32)
        out[:, 0] = input_ids[:, 0]
        out[:, 1] = mask.sum(axis=1)
        return out


def make(model: FakeModel, **kw) -> tuple[Batcher, Metrics]:
    metrics = Metrics()
    args = dict(dim=4, max_batch_tokens=64, max_batch_items=8, max_wait_s=0.01,
                max_queue=100, metrics=metrics)
    args.update(kw)
    return Batcher(model, **args), metrics


def test_concurrent_requests_share_model_calls_and_get_their_own_rows() -> None:
    model = FakeModel()

    async def main() -> list[np.ndarray]:
        batcher, _ = make(model)
        batcher.start()
        reqs = [[[i] * (1 + i % 5), [i + 100] * 2] for i in range(10)]
        outs = await asyncio.gather(*[batcher.enqueue(r, 5) for r in reqs])
        await batcher.drain(5)
        return [(r, o.embeddings) for r, o in zip(reqs, outs, strict=True)]

    for req, emb in asyncio.run(main()):
        assert emb[:, 0].tolist() == [row[0] for row in req]
        assert emb[:, 1].tolist() == [len(row) for row in req]
    assert len(model.calls) < 10
    for n, width in model.calls:  # the budget holds for every call, padding included
        assert n * width <= 64 and n <= 8


def test_items_are_sorted_by_length_to_cut_padding() -> None:
    model = FakeModel()

    async def main() -> None:
        batcher, metrics = make(model, max_batch_tokens=256, max_batch_items=3)
        batcher.start()
        # long and short items interleaved within and across requests
        reqs = [[[1] * 30, [2] * 2], [[3] * 31, [4] * 3], [[5] * 29, [6] * 2]]
        await asyncio.gather(*[batcher.enqueue(r, 5) for r in reqs])
        await batcher.drain(5)

    asyncio.run(main())
    assert sorted(model.calls) == [(3, 3), (3, 31)]


def test_a_failing_request_does_not_fail_its_batch_mates() -> None:
    model = FakeModel()

    async def main() -> list:
        batcher, metrics = make(model)
        batcher.start()
        reqs = [[[1, 2]], [[POISON, 2]], [[3, 4, 5]]]
        results = await asyncio.gather(*(batcher.submit(r, 5) for r in reqs),
                                       return_exceptions=True)
        await batcher.drain(5)
        return results

    ok1, bad, ok2 = asyncio.run(main())
    assert isinstance(bad, ComputeError)
    assert ok1.embeddings[0, 0] == 1 and ok2.embeddings[0, 0] == 3


def test_full_queue_is_overloaded() -> None:
    model = FakeModel(delay=0.2)

    async def main() -> list:
        batcher, _ = make(model, max_queue=1, max_wait_s=0)
        batcher.start()
        first = asyncio.create_task(batcher.submit([[1]], 5))
        await asyncio.sleep(0.05)  # first is computing, the queue is empty
        second = asyncio.create_task(batcher.submit([[2]], 5))
        await asyncio.sleep(0.01)  # second waits in the queue
        with pytest.raises(OverloadedError) as info:
            await batcher.submit([[3]], 5)
        assert info.value.headers() == {"Retry-After": "1"}
        res = await asyncio.gather(first, second)
        await batcher.drain(5)
        return res

    assert [r.embeddings[0, 0] for r in asyncio.run(main())] == [1, 2]


def test_deadline_gives_504_and_the_work_is_skipped() -> None:
    model = FakeModel(delay=0.3)

    async def main() -> None:
        batcher, _ = make(model, max_wait_s=0)
        batcher.start()
        first = asyncio.create_task(batcher.submit([[1]], 5))
        await asyncio.sleep(0.05)
        with pytest.raises(DeadlineExceededError):
            await batcher.submit([[2]], 0.05)
        await first
        await batcher.drain(5)

    asyncio.run(main())
    assert len(model.calls) == 1  # the expired request never reached the model


def test_drain_finishes_queued_work_and_refuses_new() -> None:
    model = FakeModel(delay=0.05)

    async def main() -> None:
        batcher, _ = make(model, max_batch_tokens=64, max_wait_s=0)
        batcher.start()
        tasks = [asyncio.create_task(batcher.submit([[i] * 60], 5)) for i in range(5)]
        await asyncio.sleep(0.01)
        drain = asyncio.create_task(batcher.drain(5))
        await asyncio.sleep(0)
        with pytest.raises(UnavailableError):
            await batcher.submit([[9]], 5)
        assert [t.embeddings[0, 0] for t in await asyncio.gather(*tasks)] == list(range(5))
        assert await drain

    asyncio.run(main())


def test_very_different_lengths_go_to_separate_calls() -> None:
    model = FakeModel()

    async def main() -> None:
        batcher, metrics = make(model, max_batch_tokens=4096, max_batch_items=64,
                                call_overhead_tokens=32)
        batcher.start()
        reqs = [[[1] * 3] * 10, [[2] * 200] * 2, [[3] * 4] * 3]
        outs = await asyncio.gather(*[batcher.enqueue(r, 5) for r in reqs])
        await batcher.drain(5)
        for req, out in zip(reqs, outs, strict=True):
            assert out.embeddings[:, 1].tolist() == [len(x) for x in req]

    asyncio.run(main())
    # one call for the 13 short items, one for the 2 long ones: not 15 x 200 padded slots
    assert sorted(model.calls) == [(2, 200), (13, 4)]


def test_a_large_request_shares_the_model_with_later_small_ones() -> None:
    model = FakeModel(delay=0.02)

    async def main() -> list[str]:
        batcher, _ = make(model, max_batch_tokens=64, max_batch_items=64, max_wait_s=0)
        batcher.start()
        done: list[str] = []

        async def run(name: str, ids: list[list[int]]) -> None:
            out = await batcher.submit(ids, 10)
            assert out.embeddings[:, 0].tolist() == [row[0] for row in ids]
            done.append(name)

        big = asyncio.create_task(run("big", [[k] * 60 for k in range(20)]))  # 20 rounds
        await asyncio.sleep(0.05)
        await asyncio.gather(run("small", [[7, 7]]), big)
        await batcher.drain(5)
        return done

    assert asyncio.run(main()) == ["small", "big"]


def test_short_items_are_answered_before_the_round_ends() -> None:
    class SlowLong(FakeModel):
        def __call__(self, input_ids, mask):
            time.sleep(0.3 if input_ids.shape[1] > 10 else 0.0)
            return super().__call__(input_ids, mask)

    model = SlowLong()

    async def main() -> list[str]:
        batcher, _ = make(model, max_batch_tokens=256, max_wait_s=0.05)
        batcher.start()
        done: list[str] = []

        async def run(name: str, ids: list[list[int]]) -> None:
            await batcher.submit(ids, 5)
            done.append(name)

        await asyncio.gather(run("long", [[1] * 60]), run("short", [[2] * 2]))
        await batcher.drain(5)
        return done

    assert asyncio.run(main()) == ["short", "long"]
    assert sorted(model.calls) == [(1, 2), (1, 60)]  # one round, two calls


def test_a_large_request_is_padded_right() -> None:
    # GIVEN one request of many items of different lengths (padded with numpy in one go)
    model = FakeModel()
    ids = [[(k % 50) + 1] * (1 + k % 7) for k in range(100)]

    async def main() -> np.ndarray:
        batcher, _ = make(model, max_batch_tokens=4096, max_batch_items=256,
                          call_overhead_tokens=10_000)
        batcher.start()
        out = await batcher.submit(ids, 5)
        await batcher.drain(5)
        return out.embeddings

    emb = asyncio.run(main())
    # THEN every row has its own first id and its own length (the mask's row sum)
    assert emb[:, 0].tolist() == [row[0] for row in ids]
    assert emb[:, 1].tolist() == [len(row) for row in ids]
    assert model.calls == [(100, 7)]


def test_the_batcher_keeps_serving_after_requests_expire() -> None:
    # GIVEN a request that expires while a slow call runs, so its tenant's queue dies
    model = FakeModel(delay=0.2)

    async def main() -> list[float]:
        batcher, _ = make(model, max_wait_s=0)
        batcher.start()
        slow = batcher.enqueue([[1] * 60], 5, tenant="a")
        await asyncio.sleep(0.05)
        with pytest.raises(DeadlineExceededError):
            await batcher.submit([[2] * 60], 0.05, tenant="b")
        await slow
        await asyncio.sleep(0.05)  # the lanes look at the dead queue and go idle
        # WHEN a new request arrives, THEN a lane wakes for it
        out = await batcher.submit([[3, 3]], 2, tenant="c")
        await batcher.drain(5)
        return out.embeddings[:, 0].tolist()

    assert asyncio.run(main()) == [3.0]
