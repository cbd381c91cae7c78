"""The webhook delivery state machine (gateway/services/webhook_delivery.py ``next_state``):
from a pending delivery and what its attempt found to what the delivery log records and what
the attempt counts as. Pure values: no threads, no clock (times are arguments), no store."""

from __future__ import annotations

import pytest

from gateway.domain.webhooks import GIVE_UP_AFTER_S, MAX_RETRY_S, Attempt, Delivery
from gateway.services.webhook_delivery import AttemptOutcome, AttemptResult, NextState, next_state

T0_MS = 1_800_000_000_000  # the first attempt


def pending(*history_ms: int) -> Delivery:
    """A pending delivery whose earlier attempts were at ``history_ms``."""
    attempts = tuple(Attempt(at_ms=at, status_code=500, error=None, duration_ms=3) for at in history_ms)
    return Delivery(webhook_id="wh_1", event_id="evt_1", event_type="credits.low", status="pending",
                    created_ms=T0_MS, attempts=len(attempts), next_attempt_ms=T0_MS, history=attempts)


def attempt_at(at_ms: int, status_code: int | None = 500) -> Attempt:
    return Attempt(at_ms=at_ms, status_code=status_code, error=None, duration_ms=5)


def test_a_2xx_answer_is_delivered_and_nothing_more_is_scheduled():
    state = next_state(pending(), attempt_at(T0_MS, 200), AttemptOutcome.DELIVERED, now_s=T0_MS / 1000, jitter=0.5)
    assert state == NextState(delivered=True, next_attempt_ms=None, result=AttemptResult.DELIVERED)
    assert not state.dead_lettered


def test_a_first_failure_is_retried_a_second_later_without_jitter():
    state = next_state(pending(), attempt_at(T0_MS), AttemptOutcome.FAILED, now_s=T0_MS / 1000, jitter=0.0)
    assert state == NextState(delivered=False, next_attempt_ms=T0_MS + 1000, result=AttemptResult.RETRYING)


def test_jitter_shortens_the_wait_by_up_to_half():
    # jitter 0.5 takes a quarter off the first second's wait (1 - 0.5 / 2)
    state = next_state(pending(), attempt_at(T0_MS), AttemptOutcome.FAILED, now_s=T0_MS / 1000, jitter=0.5)
    assert state.next_attempt_ms == T0_MS + 750


def test_the_wait_doubles_with_each_failure_up_to_an_hour():
    waits = []
    history: list[int] = []
    now_ms = T0_MS
    for _ in range(16):
        state = next_state(pending(*history), attempt_at(now_ms), AttemptOutcome.FAILED, now_s=now_ms / 1000,
                           jitter=0.0)
        assert state.result is AttemptResult.RETRYING and state.next_attempt_ms is not None
        waits.append(state.next_attempt_ms - now_ms)
        history.append(now_ms)
        now_ms = state.next_attempt_ms
    assert waits[:4] == [1000, 2000, 4000, 8000]
    assert max(waits) == waits[-1] == MAX_RETRY_S * 1000


def test_the_retry_window_is_counted_from_the_first_attempt_then_the_delivery_is_dead_lettered():
    first = T0_MS
    late_ms = first + round((GIVE_UP_AFTER_S - 1) * 1000)  # the third wait (4 s) would end past the day
    state = next_state(pending(first, first + 1000), attempt_at(late_ms), AttemptOutcome.FAILED,
                       now_s=late_ms / 1000, jitter=0.0)
    assert state == NextState(delivered=False, next_attempt_ms=None, result=AttemptResult.FAILED)
    assert state.dead_lettered
    # The same failure early in the window is retried.
    early = next_state(pending(first), attempt_at(first + 1000), AttemptOutcome.FAILED, now_s=first / 1000 + 1,
                       jitter=0.0)
    assert early.result is AttemptResult.RETRYING


def test_a_first_attempt_counts_its_own_time_as_the_start_of_the_window():
    # No history yet: the attempt itself opens the window (a retry an hour on is well inside it).
    state = next_state(pending(), attempt_at(T0_MS), AttemptOutcome.FAILED, now_s=T0_MS / 1000 + 3600,
                       jitter=0.0)
    assert state.result is AttemptResult.RETRYING


def test_a_deleted_webhook_or_a_vanished_event_cancels_the_delivery():
    state = next_state(pending(T0_MS), attempt_at(T0_MS + 1000, None), AttemptOutcome.GONE,
                       now_s=T0_MS / 1000, jitter=0.5)
    assert state == NextState(delivered=False, next_attempt_ms=None, result=AttemptResult.CANCELLED)
    assert not state.dead_lettered


@pytest.mark.parametrize("outcome", [AttemptOutcome.DELIVERED, AttemptOutcome.FAILED])
def test_an_attempt_another_worker_logged_first_counts_as_lost(outcome):
    state = next_state(pending(), attempt_at(T0_MS), outcome, now_s=T0_MS / 1000, jitter=0.0)
    assert state.counted(logged=True) is state.result
    assert state.counted(logged=False) is AttemptResult.LOST


def test_a_cancellation_counts_as_one_whoever_logged_it():
    state = next_state(pending(), attempt_at(T0_MS, None), AttemptOutcome.GONE, now_s=T0_MS / 1000, jitter=0.0)
    assert state.counted(logged=False) is state.counted(logged=True) is AttemptResult.CANCELLED


def test_a_given_up_delivery_lost_to_another_worker_is_not_counted_as_failed():
    late_ms = T0_MS + round(GIVE_UP_AFTER_S * 1000)
    state = next_state(pending(T0_MS), attempt_at(late_ms), AttemptOutcome.FAILED, now_s=late_ms / 1000, jitter=0.0)
    assert state.result is AttemptResult.FAILED
    assert state.counted(logged=False) is AttemptResult.LOST
