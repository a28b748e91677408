"""The generator's rules (service.domain.generation) and settings (service.config): pure
functions, no I/O."""

import json
import re
from datetime import UTC, datetime

import pytest

from service.config import ConfigError, load_config
from service.domain.generation import (
    GENERATED,
    GIVE_UP,
    RETRY,
    Answer,
    content_of,
    next_step,
    request,
)

NOW = 1_750_000_000_000_000


def step(answer, attempts=1, max_attempts=3):
    return next_step(answer, attempts, max_attempts, NOW, 5.0, 4096, rand=lambda: 0.5)


def body(value):
    return json.dumps(value).encode()


def test_a_2xx_with_content_is_the_reply():
    assert step(Answer(200, body=body({"content": "Olá!"}))).content == "Olá!"
    assert step(Answer(201, body=body({"content": "x", "extra": 1}))).outcome == GENERATED


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"", "answer is not JSON"),
        (b"\xff", "answer is not JSON"),
        (body([]), "answer has no content"),
        (body({"content": "  \n"}), "answer has no content"),
        (body({"content": 3}), "answer has no content"),
        (body({"content": "x" * 4097}), "content longer than 4096 characters"),
        (None, "answer too large"),
        (body({"content": "a\x00b"}), "content has a NUL character"),
        (b'{"content": "a\\ud800b"}', "content is not valid Unicode (a lone surrogate)"),
    ],
)
def test_a_2xx_without_a_usable_content_is_given_up_at_once(raw, reason):
    found = step(Answer(200, body=raw))
    assert (found.outcome, found.error) == (GIVE_UP, f"HTTP 200: {reason}")
    with pytest.raises(ValueError, match=re.escape(reason)):
        content_of(raw, 4096)


@pytest.mark.parametrize("status", [301, 400, 401, 404, 422])
def test_other_refusals_are_not_retried(status):
    assert step(Answer(status)).outcome == GIVE_UP
    assert step(Answer(status)).error == f"HTTP {status}: not retried"


@pytest.mark.parametrize(
    "answer", [Answer(None, "timeout after 10 s"), Answer(408), Answer(429), Answer(503)]
)
def test_no_answer_408_429_and_5xx_are_retried_then_given_up(answer):
    first = step(answer, attempts=1)
    assert first.outcome == RETRY
    # Full jitter with rand 0.5: half of the first backoff (1 s).
    assert first.next_attempt_us == NOW + 500_000
    second = step(answer, attempts=2)
    assert second.next_attempt_us == NOW + 1_000_000
    last = step(answer, attempts=3)
    assert last.outcome == GIVE_UP
    assert last.error.startswith("gave up after 3 attempts: ")


def test_retry_after_is_honoured_up_to_a_minute():
    assert step(Answer(429, retry_after="7")).next_attempt_us == NOW + 7_000_000
    assert step(Answer(429, retry_after="3600")).next_attempt_us == NOW + 60_000_000


def test_the_request_names_the_group():
    moment = datetime(2025, 6, 4, 14, 20, 5, tzinfo=UTC)
    assert request("c", "r", [("m1", "Oi", moment)], moment) == {
        "type": "group.closed",
        "conversation_id": "c",
        "reply_id": "r",
        "closed_at": "2025-06-04T14:20:05Z",
        "messages": [{"id": "m1", "content": "Oi", "timestamp": "2025-06-04T14:20:05Z"}],
    }


def test_the_generator_is_off_by_default():
    config = load_config("/tmp", {})
    assert config["REPLY_GENERATOR_URL"] is None
    assert config["REPLY_GENERATOR_FALLBACK"] == "template"
    assert config["REPLY_GENERATOR_ATTEMPTS"] == 3
    assert config["REPLY_GENERATOR_TIMEOUT_SECONDS"] == 10.0


def test_generator_settings_are_checked():
    config = load_config(
        "/tmp",
        {
            "REPLY_GENERATOR_URL": " http://bot:9000/reply ",
            "REPLY_GENERATOR_FALLBACK": "FAIL",
            "REPLY_GENERATOR_TOKEN": "t",
        },
    )
    assert config["REPLY_GENERATOR_URL"] == "http://bot:9000/reply"
    assert config["REPLY_GENERATOR_FALLBACK"] == "fail"
    assert config["REPLY_GENERATOR_TOKEN"] == "t"
    with pytest.raises(ConfigError, match="REPLY_GENERATOR_URL"):
        load_config("/tmp", {"REPLY_GENERATOR_URL": "bot:9000"})
    with pytest.raises(ConfigError, match="REPLY_GENERATOR_FALLBACK"):
        load_config("/tmp", {"REPLY_GENERATOR_FALLBACK": "silence"})
    with pytest.raises(ConfigError, match="REPLY_GENERATOR_ATTEMPTS"):
        load_config("/tmp", {"REPLY_GENERATOR_ATTEMPTS": "0"})
