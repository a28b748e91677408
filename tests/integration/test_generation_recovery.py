"""Self-healing of reply generation (issue 13) with real processes: gunicorn, a replies
worker, a generations worker and a scheduler on a private Redis server (a restart empties it;
the shared server is never touched) and the test PostgreSQL database, asking a real HTTP bot.
"""

import time

import pytest

from service.domain.generation import PENDING, STORED
from tests import conftest
from tests.helpers import (
    close_conversation,
    http_peer,
    new_conversation,
    new_id,
    new_message,
    wait_for,
)
from tests.integration.test_generator import Bot, row, rows_of
from tests.stack import LiveStack, stack_env

# Seconds the bot may take, once it answers again, to have written every reply: a retry is
# due within REPLY_GENERATOR_MAX_BACKOFF_SECONDS, a pass runs every REPLY_GENERATOR_INTERVAL.
GENERATED_WITHIN = 30


@pytest.fixture
def bot():
    """A real HTTP bot on a free local port, answering 503 until told otherwise."""
    with http_peer(Bot) as bot:
        bot.default = 503
        yield bot


@pytest.fixture
def stack(private_redis, bot, tmp_path):
    """The whole service on the private Redis, asking `bot`: a short quiet window and short
    retry pauses, and enough attempts that the fallback never answers in this test."""
    env = stack_env(conftest.TEST_DATABASE_URL, private_redis.url) | {
        "REPLY_GENERATOR_URL": bot.url,
        "REPLY_GENERATOR_TIMEOUT_SECONDS": "2",
        "REPLY_GENERATOR_MAX_BACKOFF_SECONDS": "2",
        "REPLY_GENERATOR_ATTEMPTS": "1000",
        "REPLY_GENERATOR_INTERVAL": "1",
        "QUIET_SECONDS": "1",
    }
    stack = LiveStack(env, logs=tmp_path / "logs")
    try:
        stack.start(workers=1, schedulers=1)
        stack.start_generation_workers(1)
        yield stack
    finally:
        stack.stop()


def posted(stack, event, status):
    response = stack.post(event)
    assert response.status_code == status, response.text
    return response


def test_redis_lost_with_groups_waiting_for_the_bot(make_app, bot, private_redis, stack):
    """Groups closed while the bot answers 503, then Redis restarts empty (queued passes, the
    periodic pass and its schedule gone), then the bot answers: every group gets exactly one
    reply, the bot's, in group order, within seconds."""
    app = make_app()
    conversations = [new_id() for _ in range(3)]
    sent = {c: [] for c in conversations}
    for conversation_id in conversations:
        posted(stack, new_conversation(conversation_id), 201)
    # Two groups each: a message, then (after the 1 s quiet window closed its group) another,
    # closed by the close.
    for conversation_id in conversations:
        sent[conversation_id].append(new_id())
        posted(stack, new_message(sent[conversation_id][-1], conversation_id, content="a"), 202)

    def closed(count):
        with app.app_context():
            return all(len(rows_of(c)) >= count for c in conversations)

    wait_for(lambda: closed(1), timeout=15)
    for conversation_id in conversations:
        sent[conversation_id].append(new_id())
        posted(stack, new_message(sent[conversation_id][-1], conversation_id, content="b"), 202)
        posted(stack, close_conversation(conversation_id), 200)
    wait_for(lambda: closed(2), timeout=15)
    # The bot was asked (and failed) at least twice for every head.
    wait_for(lambda: len(bot.seen) >= 2 * len(conversations), timeout=15)

    private_redis.kill()
    private_redis.start()
    with bot.lock:
        bot.default = None  # answers 200 from now on
        back = time.monotonic()

    def all_stored():
        with app.app_context():
            return all(r["status"] == STORED for c in conversations for r in rows_of(c))

    wait_for(all_stored, timeout=GENERATED_WITHIN, interval=0.1)
    assert time.monotonic() - back < GENERATED_WITHIN
    for conversation_id in conversations:
        messages = stack.conversation(conversation_id)["messages"]
        assert [(m["type"], m["content"]) for m in messages] == [
            ("INBOUND", "a"),
            ("OUTBOUND", "Bot: a"),
            ("INBOUND", "b"),
            ("OUTBOUND", "Bot: b"),
        ]
    with app.app_context():
        generations = [r for c in conversations for r in rows_of(c)]
        assert all(row(r["reply_id"])["source"] == "generator" for r in generations)
        assert PENDING not in {r["status"] for r in generations}
    assert stack.exited() == {}
