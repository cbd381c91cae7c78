"""A Redis client that counts the commands it sends (each command of a pipeline counts; a
script call is one command) and the round trips (a pipeline is one): what the flusher's
cost per run is measured in, by the tests and by tests/performance/bench_active_tenants.py."""

from __future__ import annotations

from collections import Counter
from typing import Any

import redis
from redis.client import Pipeline


class CountingRedis(redis.Redis):
    """``redis.Redis`` whose ``commands`` counts commands by name and ``round_trips`` the
    requests sent; ``reset()`` starts again."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands: Counter[str] = Counter()
        self.round_trips = 0

    def reset(self) -> None:
        self.commands.clear()
        self.round_trips = 0

    @property
    def total(self) -> int:
        return sum(self.commands.values())

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.commands[str(args[0]).upper()] += 1
        self.round_trips += 1
        return super().execute_command(*args, **options)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Pipeline:
        return _CountingPipeline(self, transaction, shard_hint)


class _CountingPipeline(Pipeline):
    def __init__(self, owner: CountingRedis, transaction: bool, shard_hint: Any) -> None:
        super().__init__(owner.connection_pool, owner.response_callbacks, transaction, shard_hint)
        self.owner = owner

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        if self.command_stack:
            self.owner.round_trips += 1
            for args, _ in self.command_stack:
                self.owner.commands[str(args[0]).upper()] += 1
        return super().execute(raise_on_error)


def counting_client(url: str) -> CountingRedis:
    return CountingRedis.from_url(url)  # type: ignore[return-value]
