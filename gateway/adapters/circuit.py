"""A circuit breaker in front of the inference container (any ``InferenceClient``).

While the container is known to be down, hung or not ready, a request is refused at once
(503 + Retry-After, no I/O) instead of waiting on a connection or a read timeout that cannot
end well, and the container is not hammered while it loads its model.

- closed: every request goes through. An outage answer (``ServiceUnavailableError``:
  unreachable, not ready, overloaded; ``UpstreamTimeoutError``: no answer in time) opens it.
  The container's own 504 (``ContainerDeadlineError``: this request's deadline passed in its
  queue) does not: it answered, and one tenant's largest requests running out of time must
  not refuse every other tenant's requests on this copy.
- open: every request fails fast for ``open_s``, which doubles after each failed trial, up
  to ``max_open_s``. Retry-After says when the next trial is due (whole seconds, at least 1).
- half-open: once that time is up, ONE request goes through as the trial (the others still
  fail fast); its success closes the breaker, its outage answer opens it again.

Any other answer (a 200, a 4xx/502 the container sent) proves the container is up. There is
one breaker per process (a Lambda copy serves one request at a time; each copy learns on
its own), with no thread and no I/O of its own: it only watches the answers."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from enum import StrEnum

from gateway.adapters.inference import Embeddings, InferenceClient
from gateway.errors import ContainerDeadlineError, ServiceUnavailableError, UpstreamTimeoutError

# What says the container is away (rather than that this one request was bad).
OUTAGES = (ServiceUnavailableError, UpstreamTimeoutError)


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitBreaker:
    """Wraps ``inner`` (an ``InferenceClient``) and is one: ``embed`` and ``ready``."""

    def __init__(self, inner: InferenceClient, *, open_s: float = 0.5, max_open_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.inner = inner
        self.open_s = open_s
        self.max_open_s = max_open_s
        self.clock = clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._open_for = open_s
        self._retry_at = 0.0  # when an open breaker lets its next trial through

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._state

    def embed(self, input_ids: list[list[int]], *, tenant_id: str, timeout_s: float,
              model: str | None = None, background: bool = False) -> Embeddings:
        self._enter()
        try:
            result = self.inner.embed(input_ids, tenant_id=tenant_id, timeout_s=timeout_s, model=model,
                                      **({"background": True} if background else {}))
        except ContainerDeadlineError:
            self._succeeded()  # an answer: the container is there
            raise
        except OUTAGES:
            self._failed()
            raise
        except Exception:
            self._succeeded()  # the container answered, if badly: it is there
            raise
        self._succeeded()
        return result

    def ready(self) -> bool:
        """False while open (no I/O); otherwise the container's own answer, which also
        closes or opens the breaker (so a health probe can end an outage early)."""
        with self._lock:
            if self._state is not BreakerState.CLOSED and self.clock() < self._retry_at:
                return False
        ready = self.inner.ready()
        if ready:
            self._succeeded()
        else:
            self._failed()
        return ready

    # -- the state machine -----------------------------------------------------------------
    def _enter(self) -> None:
        """Let the request through, or refuse it at once."""
        with self._lock:
            if self._state is BreakerState.CLOSED:
                return
            now = self.clock()
            if self._state is BreakerState.OPEN and now >= self._retry_at:
                self._state = BreakerState.HALF_OPEN  # this request is the trial
                return
            # Open, or a trial under way: its answer is due within Retry-After at the latest.
            wait_s = max(1, math.ceil(self._retry_at - now)) if self._state is BreakerState.OPEN else 1
        raise ServiceUnavailableError("The inference service is unavailable; retry shortly.",
                                      code="inference_unavailable", headers={"Retry-After": str(wait_s)})

    def _failed(self) -> None:
        with self._lock:
            if self._state is BreakerState.HALF_OPEN:  # the trial failed: stay away longer
                self._open_for = min(self.max_open_s, self._open_for * 2)
            elif self._state is BreakerState.CLOSED:
                self._open_for = self.open_s
            self._state = BreakerState.OPEN
            self._retry_at = self.clock() + self._open_for

    def _succeeded(self) -> None:
        with self._lock:
            self._state = BreakerState.CLOSED
            self._open_for = self.open_s
