"""The rules of reply generation by the team's bot (../shared/SPEC.md, "Reply generation and
delivery"): statuses, the request sent for a closed group, what answer is a reply, and when
the generator is given up on.

Times are integer microseconds since the epoch (service.domain.clock).
"""

import json
import random
from dataclasses import dataclass

from service.domain.clock import seconds_us
from service.domain.delivery import (
    backoff_seconds,
    describe,
    is_retryable,
    iso,
    retry_after_seconds,
)

# A closed group waiting for its reply; its reply stored (by the generator or, as the
# fallback, the template); or given up on with REPLY_GENERATOR_FALLBACK=fail.
PENDING = "pending"
STORED = "stored"
FAILED = "failed"
STATUSES = (PENDING, STORED, FAILED)
# Who wrote a stored reply.
GENERATOR = "generator"
TEMPLATE = "template"
SOURCES = (GENERATOR, TEMPLATE)
# The outcomes of one attempt.
GENERATED = "generated"
RETRY = "retry"
GIVE_UP = "give_up"

REQUEST_TYPE = "group.closed"
# A Retry-After longer than this is not waited for: a customer is waiting for the reply, and
# the fallback is better than silence.
MAX_RETRY_AFTER_SECONDS = 60.0


@dataclass(frozen=True)
class Answer:
    """What one call got: the HTTP `status` (None when the generator did not answer), the
    `error` text when it did not ("timeout after 10 s"), its `Retry-After` header, and the
    response `body` (bytes, at most the size limit; None when too large or not read)."""

    status: int | None
    error: str | None = None
    retry_after: str | None = None
    body: bytes | None = None


@dataclass(frozen=True)
class Step:
    """What follows a call: `outcome` GENERATED (with `content`), RETRY (due at
    `next_attempt_us`) or GIVE_UP; `error` says why it was not GENERATED."""

    outcome: str
    content: str | None = None
    next_attempt_us: int | None = None
    error: str | None = None


def request(conversation_id, reply_id, messages, closed_at):
    """The JSON-ready body POSTed to the generator for a closed group. `messages`: (id,
    content, timestamp) triples in arrival order, timestamps as aware datetimes; `closed_at`:
    when the group was closed (aware datetime)."""
    return {
        "type": REQUEST_TYPE,
        "conversation_id": str(conversation_id),
        "reply_id": str(reply_id),
        "closed_at": iso(closed_at),
        "messages": [
            {"id": str(message_id), "content": content, "timestamp": iso(timestamp)}
            for message_id, content, timestamp in messages
        ],
    }


def content_of(body, max_chars):
    """The reply in a 2xx answer's body: its JSON object's `content`, a string of 1 to
    `max_chars` characters that is not only whitespace, with no NUL and no lone surrogate.
    Raises ValueError saying what is wrong ("no content", "content longer than 4096
    characters", "not JSON", ...)."""
    if body is None:
        raise ValueError("answer too large")
    try:
        answer = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("answer is not JSON") from None
    content = answer.get("content") if isinstance(answer, dict) else None
    if not isinstance(content, str) or not content.strip():
        raise ValueError("answer has no content")
    if len(content) > max_chars:
        raise ValueError(f"content longer than {max_chars} characters")
    # What a database cannot store: PostgreSQL text has no NUL, and a lone surrogate (JSON
    # allows "\ud800") is not UTF-8.
    if "\x00" in content:
        raise ValueError("content has a NUL character")
    try:
        content.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("content is not valid Unicode (a lone surrogate)") from None
    return content


def next_step(answer, attempts, max_attempts, now_us, cap_seconds, max_chars, rand=None):
    """What follows a call (`attempts` made so far, this one included) that got `answer`.

    2xx with a valid content: GENERATED. Other 2xx, 3xx and 4xx other than 408/429: GIVE_UP
    at once (asking again would get the same). No answer, 408, 429, 5xx: RETRY after
    max(Retry-After up to MAX_RETRY_AFTER_SECONDS, full-jitter backoff capped at
    `cap_seconds`), until `max_attempts` calls were made: then GIVE_UP.
    """
    status = answer.status
    if status is not None and 200 <= status <= 299:
        try:
            return Step(GENERATED, content=content_of(answer.body, max_chars))
        except ValueError as exc:
            return Step(GIVE_UP, error=f"HTTP {status}: {exc}")
    if not is_retryable(status):
        return Step(GIVE_UP, error=f"HTTP {status}: not retried")
    cause = describe(answer)
    if attempts >= max_attempts:
        return Step(GIVE_UP, error=f"gave up after {attempts} attempts: {cause}")
    delay = backoff_seconds(attempts, cap_seconds, rand or random.random)
    asked = retry_after_seconds(answer.retry_after, now_us)
    if asked is not None:
        delay = max(delay, min(asked, MAX_RETRY_AFTER_SECONDS))
    return Step(RETRY, next_attempt_us=now_us + seconds_us(delay), error=cause)
