"""The inference circuit breaker (gateway/adapters/circuit.py) as a state machine: a scripted
container behind it, a clock the test moves. Real sockets: tests/integration/test_inference_faults.py."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gateway.adapters.circuit import BreakerState, CircuitBreaker
from gateway.adapters.inference import Embeddings
from gateway.errors import ContainerDeadlineError, ServiceUnavailableError, UpstreamError, UpstreamTimeoutError

VECTOR = Embeddings(count=1, dim=1, prompt_tokens=3, data=b"\0\0\x80?")


class ScriptedContainer:
    """An InferenceClient whose next answers the test sets; counts the calls that reached it."""

    def __init__(self) -> None:
        self.answer: Callable[[], Embeddings] = lambda: VECTOR
        self.is_ready = True
        self.calls = 0
        self.pings = 0

    def embed(self, input_ids: list[list[int]], *, tenant_id: str, timeout_s: float,
              model: str | None = None) -> Embeddings:
        self.calls += 1
        return self.answer()

    def ready(self) -> bool:
        self.pings += 1
        return self.is_ready


def down() -> Embeddings:
    raise ServiceUnavailableError("the inference service is unreachable")


def too_slow() -> Embeddings:
    raise UpstreamTimeoutError("the inference service did not answer in time")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def container() -> ScriptedContainer:
    return ScriptedContainer()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def breaker(container: ScriptedContainer, clock: Clock) -> CircuitBreaker:
    return CircuitBreaker(container, open_s=0.5, max_open_s=2.0, clock=clock)


def embed(breaker: CircuitBreaker) -> Embeddings:
    return breaker.embed([[101, 1037, 102]], tenant_id="ten_x", timeout_s=20.0)


def test_closed_passes_everything_through(breaker, container):
    assert embed(breaker) is VECTOR and embed(breaker) is VECTOR
    assert container.calls == 2 and breaker.state is BreakerState.CLOSED


@pytest.mark.parametrize("outage", [down, too_slow])
def test_an_outage_opens_it_and_the_next_requests_fail_fast(breaker, container, clock, outage):
    # GIVEN a container that is down (or hung)
    container.answer = outage
    with pytest.raises((ServiceUnavailableError, UpstreamTimeoutError)) as first:
        embed(breaker)
    assert first.value.headers["Retry-After"] == "1"  # a 504 says when to retry, as a 503 does
    # WHEN more requests come while it is known to be away
    for _ in range(5):
        with pytest.raises(ServiceUnavailableError) as refused:
            embed(breaker)
        # THEN they are refused without reaching it, with Retry-After
        assert refused.value.status == 503 and refused.value.headers["Retry-After"] == "1"
        assert refused.value.code == "inference_unavailable"
    assert container.calls == 1 and breaker.state is BreakerState.OPEN
    assert not breaker.ready() and container.pings == 0  # no I/O while open


def test_the_containers_own_504_leaves_it_closed(breaker, container):
    # GIVEN a container that answers 504: this request's deadline passed in its queue
    def deadline_passed() -> Embeddings:
        raise ContainerDeadlineError("the inference service did not answer in time")

    container.answer = deadline_passed
    with pytest.raises(UpstreamTimeoutError) as timed_out:
        embed(breaker)
    assert timed_out.value.status == 504
    # THEN it answered, so it is there: the next request (another tenant's) still reaches it
    container.answer = lambda: VECTOR
    assert embed(breaker) is VECTOR
    assert breaker.state is BreakerState.CLOSED and container.calls == 2


def test_one_trial_after_the_pause_and_its_success_closes_it(breaker, container, clock):
    container.answer = down
    with pytest.raises(ServiceUnavailableError):
        embed(breaker)
    container.answer = lambda: VECTOR  # the container is back
    clock.now += 0.49
    with pytest.raises(ServiceUnavailableError):
        embed(breaker)  # still open
    clock.now += 0.02
    assert embed(breaker) is VECTOR  # the trial
    assert breaker.state is BreakerState.CLOSED and container.calls == 2
    assert embed(breaker) is VECTOR


def test_only_one_trial_at_a_time(breaker, container, clock):
    container.answer = down
    with pytest.raises(ServiceUnavailableError):
        embed(breaker)
    clock.now += 1

    def trial_meets_a_second_request() -> Embeddings:
        # While the trial is under way, another request does not reach the container.
        with pytest.raises(ServiceUnavailableError) as second:
            embed(breaker)
        assert second.value.headers["Retry-After"] == "1"
        return VECTOR

    container.answer = trial_meets_a_second_request
    assert embed(breaker) is VECTOR
    assert container.calls == 2 and breaker.state is BreakerState.CLOSED


def test_failed_trials_back_off_to_the_maximum_and_retry_after_says_so(breaker, container, clock):
    container.answer = down
    with pytest.raises(ServiceUnavailableError):
        embed(breaker)
    pauses = []
    for _ in range(4):
        clock.now += 10  # past any pause: the next request is a trial, and it fails
        with pytest.raises(ServiceUnavailableError):
            embed(breaker)
        with pytest.raises(ServiceUnavailableError) as refused:
            embed(breaker)
        pauses.append(refused.value.headers["Retry-After"])
    assert pauses == ["1", "2", "2", "2"]  # 1 s, 2 s, then max_open_s (whole seconds, rounded up)
    assert container.calls == 5


def test_a_bad_answer_proves_the_container_is_up(breaker, container, clock):
    def wrong() -> Embeddings:
        raise UpstreamError("the inference service sent an unreadable answer")

    container.answer = wrong
    for _ in range(3):
        with pytest.raises(UpstreamError):
            embed(breaker)
    assert breaker.state is BreakerState.CLOSED and container.calls == 3


def test_ready_asks_the_container_when_closed_and_opens_on_not_ready(breaker, container, clock):
    container.is_ready = False  # loading its model
    assert not breaker.ready() and breaker.state is BreakerState.OPEN
    with pytest.raises(ServiceUnavailableError):
        embed(breaker)
    assert container.calls == 0
    container.is_ready = True
    clock.now += 1
    assert breaker.ready() and breaker.state is BreakerState.CLOSED  # a health probe ends the outage
    assert embed(breaker) is VECTOR
