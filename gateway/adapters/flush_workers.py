"""Starting flush workers in AWS: one asynchronous invocation of the worker function per
worker, each told its share of the tenants (``part`` of ``parts``, by hash slot) and when to
stop. Lambda queues them and retries nothing (the worker's EventInvokeConfig): the next
minute's dispatch starts the next set, and consumer groups make an overlap harmless."""

from __future__ import annotations

import json
from typing import Any


def work_order(part: int, parts: int, until: float) -> dict[str, Any]:
    """The event a worker is invoked with (functions/flusher/app.py reads it)."""
    return {"part": part, "parts": parts, "until": until}


class LambdaFlushWorkers:
    def __init__(self, client: Any, function: str) -> None:
        self.client = client
        self.function = function

    def start(self, parts: int, until: float) -> int:
        """Invoke ``parts`` workers; returns how many Lambda accepted."""
        started = 0
        for part in range(parts):
            response = self.client.invoke(FunctionName=self.function, InvocationType="Event",
                                           Payload=json.dumps(work_order(part, parts, until)).encode())
            started += int(response.get("StatusCode") == 202)
        return started
