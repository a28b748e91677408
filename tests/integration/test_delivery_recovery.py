"""Self-healing of reply delivery (issue 13, item 3) with real processes: gunicorn, a replies
worker, a deliveries worker and a scheduler on a private Redis server (a restart empties it;
the shared server is never touched) and the test PostgreSQL database, delivering to a real
HTTP receiver that verifies every request with the `standardwebhooks` library.
"""

import time

import pytest

from service.domain.delivery import DELIVERED, PENDING
from tests import conftest
from tests.helpers import (
    close_conversation,
    http_peer,
    new_conversation,
    new_id,
    new_message,
    wait_for,
)
from tests.integration.test_delivery import SECRET, Receiver, row
from tests.stack import LiveStack, stack_env

# Seconds the receiver may take, once it answers 200 again, to have every reply: the
# issue's bound for a receiver that was down (60 s) is far above what the settings below
# allow (a retry due within DELIVERY_MAX_BACKOFF_SECONDS, a pass every DELIVERY_INTERVAL).
DELIVERED_WITHIN = 30


@pytest.fixture
def receiver():
    """A real HTTP receiver on a free local port, answering 503 until told otherwise."""
    with http_peer(Receiver) as receiver:
        receiver.default = 503
        yield receiver


@pytest.fixture
def stack(private_redis, receiver, tmp_path):
    """The whole service on the private Redis, delivering to `receiver`: short quiet window
    (groups 1 s apart) and short retry pauses, so the test runs in seconds."""
    env = stack_env(conftest.TEST_DATABASE_URL, private_redis.url) | {
        "REPLY_WEBHOOK_URL": receiver.url,
        "REPLY_WEBHOOK_SECRET": SECRET,
        "DELIVERY_TIMEOUT_SECONDS": "2",
        "DELIVERY_MAX_BACKOFF_SECONDS": "2",
        "DELIVERY_INTERVAL": "1",
        "QUIET_SECONDS": "1",
    }
    stack = LiveStack(env, logs=tmp_path / "logs")
    try:
        stack.start(workers=1, schedulers=1)
        stack.start_delivery_workers(1)
        yield stack
    finally:
        stack.stop()


def posted(stack, event, status):
    response = stack.post(event)
    assert response.status_code == status, response.text
    return response


def reply_ids(stack, conversation_id):
    messages = stack.conversation(conversation_id)["messages"]
    return [m["id"] for m in messages if m["type"] == "OUTBOUND"]


def test_redis_lost_with_deliveries_pending(make_app, receiver, private_redis, stack):
    """Replies stored while the receiver answers 503, then Redis restarts empty (queued
    passes, the periodic pass and its schedule gone), then the receiver answers 200: every
    reply is delivered, once as a row, in order per conversation, within seconds."""
    app = make_app()
    groups = 3
    conversations = [new_id() for _ in range(4)]
    for conversation_id in conversations:
        posted(stack, new_conversation(conversation_id), 201)
    # One group per round in each conversation: a message, then its flush's reply (after the
    # 1 s quiet window); the last group is answered by the close.
    for round_ in range(groups):
        for conversation_id in conversations:
            posted(stack, new_message(new_id(), conversation_id), 202)
        if round_ < groups - 1:
            wait_for(
                lambda n=round_ + 1: all(len(reply_ids(stack, c)) == n for c in conversations),
                timeout=15,
            )
    for conversation_id in conversations:
        posted(stack, close_conversation(conversation_id), 200)
    ids = {c: reply_ids(stack, c) for c in conversations}
    assert {len(i) for i in ids.values()} == {groups}
    receiver.order = ids
    # Every head was tried (and refused) at least twice: the retries are on backoff, and the
    # later replies of each conversation wait behind their head.
    wait_for(lambda: all(receiver.ids(c).count(i[0]) >= 2 for c, i in ids.items()), timeout=15)
    with app.app_context():
        rows = {r: row(r) for i in ids.values() for r in i}
    assert {r["status"] for r in rows.values()} == {PENDING}
    assert all(rows[i[1]]["attempts"] == 0 for i in ids.values())

    private_redis.kill()
    private_redis.start()
    with receiver.lock:
        receiver.default = 200
        back = time.monotonic()

    def all_delivered():
        with app.app_context():
            return all(row(r)["status"] == DELIVERED for r in rows)

    wait_for(all_delivered, timeout=DELIVERED_WITHIN, interval=0.1)
    took = time.monotonic() - back
    assert took < DELIVERED_WITHIN
    with app.app_context():
        final = {r: row(r) for r in rows}
    # One row per reply, each delivered once (a 2xx ends it), each received by its id.
    assert set(final) == set(rows)
    assert all(r["delivered_at"] is not None and r["last_status"] == 200 for r in final.values())
    for conversation_id, reply_order in ids.items():
        assert list(dict.fromkeys(receiver.ids(conversation_id))) == reply_order
    assert receiver.delivered == set(rows)
    assert receiver.out_of_order == []
    assert all(s["verified"] for s in receiver.seen)
    assert {s["id"] for s in receiver.seen} == set(rows)
    assert stack.exited() == {}
