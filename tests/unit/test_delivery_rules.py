"""The pure delivery rules of service.domain.delivery: no Flask, no database, no Redis."""

import uuid
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from service.domain.clock import to_datetime, to_us
from service.domain.delivery import (
    DEAD,
    DELIVERED,
    RETRY,
    Answer,
    Step,
    backoff_seconds,
    event,
    is_retryable,
    next_step,
    retry_after_seconds,
)

SECOND = 1_000_000
HOUR = 3600 * SECOND
NOW = to_us(datetime(2026, 12, 1, 12, 0, tzinfo=UTC))


def step(answer, attempts=1, now=NOW, retry_from=NOW - SECOND, rand=lambda: 0.5):
    return next_step(answer, attempts, now, retry_from, 24, 30, rand=rand)


@pytest.mark.parametrize("status", [None, 408, 429, 500, 502, 503, 504, 599])
def test_no_answer_timeouts_rate_limits_and_server_errors_are_retried(status):
    assert is_retryable(status)


@pytest.mark.parametrize("status", [300, 301, 400, 401, 403, 404, 409, 410, 413, 422])
def test_other_answers_are_not_retried(status):
    assert not is_retryable(status)


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_delivers(status):
    assert step(Answer(status)) == next_step(Answer(status), 1, NOW, NOW, 24, 30)
    assert step(Answer(status)).outcome == DELIVERED
    assert step(Answer(status)).error is None


def test_400_is_dead_at_once():
    assert step(Answer(400)).outcome == DEAD
    assert step(Answer(400)).error == "HTTP 400: not retried"
    assert step(Answer(301)).error == "HTTP 301: not retried"


def test_backoff_doubles_from_one_second_up_to_the_cap():
    ceilings = [backoff_seconds(n, 30, rand=lambda: 1.0) for n in range(1, 9)]
    assert ceilings == [1, 2, 4, 8, 16, 30, 30, 30]


def test_backoff_is_full_jitter():
    assert backoff_seconds(4, 30, rand=lambda: 0.0) == 0
    assert backoff_seconds(4, 30, rand=lambda: 0.25) == 2
    # Any attempt count, however large, stays at the cap.
    assert backoff_seconds(10_000, 30, rand=lambda: 0.5) == 15


def test_a_retry_is_due_after_the_jittered_backoff():
    result = step(Answer(503), attempts=3, rand=lambda: 0.5)
    assert result == Step(RETRY, NOW + 2 * SECOND, "HTTP 503")


def test_no_answer_is_recorded_with_its_error():
    result = step(Answer(None, "timeout after 5 s"), attempts=1, rand=lambda: 1.0)
    assert result == Step(RETRY, NOW + SECOND, "timeout after 5 s")


@pytest.mark.parametrize(("header", "seconds"), [("120", 120.0), (" 7 ", 7.0), ("0", 0.0)])
def test_retry_after_in_seconds(header, seconds):
    assert retry_after_seconds(header, NOW) == seconds


def test_retry_after_as_an_http_date():
    moment = to_datetime(NOW) + timedelta(seconds=90)
    assert retry_after_seconds(format_datetime(moment, usegmt=True), NOW) == 90
    assert retry_after_seconds("Tue, 01 Dec 2026 12:01:00 GMT", NOW) == 60
    # A date already passed: no wait.
    assert retry_after_seconds("Tue, 01 Dec 2026 11:00:00 GMT", NOW) == 0


@pytest.mark.parametrize("header", [None, "", "soon", "-5", "1.5", "Tue, 99 Foo 2026"])
def test_a_missing_or_malformed_retry_after_is_ignored(header):
    assert retry_after_seconds(header, NOW) is None


def test_retry_after_longer_than_the_backoff_wins():
    result = step(Answer(429, retry_after="120"), attempts=1, rand=lambda: 1.0)
    assert result == Step(RETRY, NOW + 120 * SECOND, "HTTP 429")


def test_retry_after_shorter_than_the_backoff_does_not_shorten_it():
    result = step(Answer(503, retry_after="1"), attempts=6, rand=lambda: 1.0)
    assert result.next_attempt_us == NOW + 30 * SECOND


def test_gave_up_once_the_window_has_passed():
    result = step(Answer(503), attempts=40, retry_from=NOW - 24 * HOUR)
    assert result == Step(DEAD, None, "gave up after 24 h: HTTP 503")
    # Just inside the window: one more try.
    assert step(Answer(503), retry_from=NOW - 24 * HOUR + SECOND).outcome == RETRY


def test_the_last_retry_is_due_at_the_window_end_at_the_latest():
    retry_from = NOW - 24 * HOUR + 10 * SECOND
    result = step(Answer(429, retry_after="3600"), retry_from=retry_from)
    assert result == Step(RETRY, retry_from + 24 * HOUR, "HTTP 429")


def test_a_2xx_after_the_window_still_delivers():
    assert step(Answer(200), retry_from=NOW - 48 * HOUR).outcome == DELIVERED


def test_the_event_follows_the_spec():
    reply, conversation, first = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    created = datetime(2026, 12, 1, 11, 59, 59, 250000, tzinfo=UTC)
    assert event(reply, conversation, "hi", [first], created) == {
        "type": "reply.created",
        "timestamp": "2026-12-01T11:59:59.250000Z",
        "data": {
            "conversation_id": str(conversation),
            "reply_id": str(reply),
            "content": "hi",
            "message_ids": [str(first)],
            "created_at": "2026-12-01T11:59:59.250000Z",
        },
    }
