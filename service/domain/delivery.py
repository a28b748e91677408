"""The rules of outbound reply delivery (../shared/SPEC.md, "Reply generation and delivery"):
statuses, which answers are retried, when, and when a delivery gives up.

Times are integer microseconds since the epoch (service.domain.clock); durations given in
seconds are converted here.
"""

import random
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

from service.domain.clock import seconds_us, to_us

PENDING = "pending"
DELIVERED = "delivered"
DEAD = "dead"
STATUSES = (PENDING, DELIVERED, DEAD)
# The outcome of one attempt that leaves the delivery pending.
RETRY = "retry"

EVENT_TYPE = "reply.created"
# The first retry waits up to this long; each later one up to twice as long as the one
# before, capped (DELIVERY_MAX_BACKOFF_SECONDS).
BACKOFF_BASE_SECONDS = 1.0
# Statuses of a receiver that may answer 2xx later (Standard Webhooks, "Retry schedule"; the
# issue): timeouts, rate limits, and its own errors. Other 4xx and 3xx say the request
# itself is refused, and would be again.
RETRYABLE_STATUSES = frozenset({408, 429})


@dataclass(frozen=True)
class Answer:
    """What one attempt got: the HTTP `status` (None when the receiver did not answer), the
    `error` text when it did not answer ("timeout after 5 s", "connection refused"), and its
    `Retry-After` header as sent (or None)."""

    status: int | None
    error: str | None = None
    retry_after: str | None = None


@dataclass(frozen=True)
class Step:
    """What follows an attempt: `outcome` DELIVERED, RETRY or DEAD, the next attempt's due time
    in µs when RETRY (else None), and the error to record (None when delivered)."""

    outcome: str
    next_attempt_us: int | None
    error: str | None


def is_retryable(status):
    """Whether an attempt that got `status` (None: no answer) may succeed later: no answer,
    408, 429 and 5xx are retried; 2xx needs no retry; 3xx and other 4xx never will."""
    return status is None or status in RETRYABLE_STATUSES or 500 <= status <= 599


def backoff_seconds(attempts, cap_seconds, rand=random.random):
    """The pause before the next attempt after `attempts` (>= 1) failed ones, in seconds:
    "full jitter" (uniform in [0, min(cap, base * 2**(attempts - 1))]), so receivers back
    after an outage are not hit by every sender at once (AWS Architecture Blog, "Exponential
    Backoff And Jitter"). `rand` returns a float in [0, 1)."""
    # The exponent is bounded so a delivery retried for a day does not build a huge float.
    ceiling = min(cap_seconds, BACKOFF_BASE_SECONDS * 2 ** min(max(attempts - 1, 0), 62))
    return ceiling * rand()


def retry_after_seconds(value, now_us):
    """A `Retry-After` header as seconds from `now_us` (RFC 9110 10.2.3: delay-seconds or an
    HTTP-date); 0 for a date already passed, None when absent or malformed."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment is None:
        return None
    if moment.tzinfo is None:  # RFC 9110: HTTP-dates are GMT
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (to_us(moment) - now_us) / 1_000_000)


def describe(answer):
    """The short text recorded for a failed attempt: "HTTP 503", or the error."""
    return answer.error if answer.status is None else f"HTTP {answer.status}"


def next_step(answer, attempts, now_us, retry_from_us, window_hours, cap_seconds, rand=None):
    """What follows an attempt (`attempts` made so far, this one included) that got `answer`.

    2xx: delivered. 3xx and 4xx other than 408/429: dead at once ("HTTP 400: not retried").
    Else a retry after max(Retry-After, backoff_seconds), unless `window_hours` have passed
    since `retry_from_us` (the reply's storage, or the operator's last retry): then dead
    ("gave up after 24 h: HTTP 503"). The last retry is due at the window's end at the latest.
    Returns a Step.
    """
    status = answer.status
    if status is not None and 200 <= status <= 299:
        return Step(DELIVERED, None, None)
    if not is_retryable(status):
        return Step(DEAD, None, f"HTTP {status}: not retried")
    cause = describe(answer)
    window_end = retry_from_us + seconds_us(window_hours * 3600)
    if now_us >= window_end:
        return Step(DEAD, None, f"gave up after {window_hours:g} h: {cause}")
    delay = backoff_seconds(attempts, cap_seconds, rand or random.random)
    asked = retry_after_seconds(answer.retry_after, now_us)
    if asked is not None:
        delay = max(delay, asked)
    return Step(RETRY, min(now_us + seconds_us(delay), window_end), cause)


def event(reply_id, conversation_id, content, message_ids, created_at):
    """The `reply.created` event (../shared/SPEC.md) as a JSON-ready dict: ids as text,
    `created_at` (the reply's aware datetime) as ISO-8601. Its `timestamp` is when the event
    occurred, the reply's creation, not the attempt (Standard Webhooks, "Payload structure";
    the attempt's time is the `webhook-timestamp` header), so every attempt sends the same
    bytes."""
    return {
        "type": EVENT_TYPE,
        "timestamp": iso(created_at),
        "data": {
            "conversation_id": str(conversation_id),
            "reply_id": str(reply_id),
            "content": content,
            "message_ids": [str(m) for m in message_ids],
            "created_at": iso(created_at),
        },
    }


def iso(moment):
    """An aware datetime as ISO-8601 in UTC with a `Z`: "2025-06-04T14:20:00.123456Z"."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
