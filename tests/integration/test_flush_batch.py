"""Batched flushes (issue 14): the flushes due at one scheduler poll answered by one job in
one database transaction, on real PostgreSQL, Redis and RQ, with the clock under control."""

import contextlib
import logging
import threading
import uuid

import pytest
from sqlalchemy import event, select, text

from service import jobs
from service.domain.clock import to_us
from service.domain.rules import INBOUND, reply_id, split_groups
from service.extensions import db
from service.infra.buffer import keys
from service.infra.models import Delivery, Generation, Message
from service.infra.queueing import DELIVERIES, GENERATIONS, get_queue, get_scheduler
from service.pipeline import replies as reply_pipeline
from service.pipeline.groups import quiet_us, reply_buffer
from tests.helpers import (
    close_conversation,
    open_conversation,
    post,
    replies,
    reply_ids,
    run_due_jobs,
    send,
    wait_for,
)

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@contextlib.contextmanager
def database_calls():
    """Count the statements and COMMITs the app's session engine runs meanwhile:
    {"statements": [sql, ...], "commits": n}."""
    seen = {"statements": [], "commits": 0}

    def statement(conn, cursor, sql, params, context, executemany):
        seen["statements"].append(sql)

    def commit(conn):
        seen["commits"] += 1

    event.listen(db.engine, "before_cursor_execute", statement)
    event.listen(db.engine, "commit", commit)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", statement)
        event.remove(db.engine, "commit", commit)


def prepare(client, fake_clock, count):
    """`count` conversations whose messages are due: in each, two messages 1 s apart, and in
    every third one a second group 6 s later. Returns the conversation ids, with the clock
    past every group's quiet window."""
    conversations = [open_conversation(client) for _ in range(count)]
    for conversation_id in conversations:
        send(client, conversation_id)
    fake_clock.advance(1)
    for conversation_id in conversations:
        send(client, conversation_id)
    fake_clock.advance(6)
    for conversation_id in conversations[::3]:
        send(client, conversation_id)
    fake_clock.advance(5)
    return conversations


def flush_a_batch(app, fake_clock, count=6):
    """`prepare` `count` conversations in `app` (its context entered), then flush them in one
    job, which must commit once. Returns (a client, the conversation ids, `database_calls`)."""
    client = app.test_client()
    conversations = prepare(client, fake_clock, count)
    with database_calls() as calls:
        jobs.flush_group(conversations)
    assert calls["commits"] == 1
    return client, conversations, calls


def recorded_groups(conversation_id):
    """The groups the recorded arrival times give (message ids as text, in order)."""
    rows = db.session.execute(
        select(Message.id, Message.received_at)
        .where(Message.conversation_id == uuid.UUID(conversation_id), Message.type == INBOUND)
        .order_by(Message.received_at, Message.id)
    ).all()
    db.session.rollback()
    pairs = [(str(message_id), to_us(at)) for message_id, at in rows]
    return [[message_id for message_id, _ in group] for group in split_groups(pairs, quiet_us())]


def answered_groups(client, conversation_id):
    return [reply_ids(reply) for reply in replies(client, conversation_id)]


def test_a_batch_is_answered_in_one_transaction_with_its_exact_groups(
    app, client, fake_clock, redis_conn
):
    conversations = prepare(client, fake_clock, 40)
    with database_calls() as calls:
        results = jobs.flush_group(conversations)
    assert results == dict.fromkeys(conversations, "answered")
    assert calls["commits"] == 1
    # The lock (its timeout set in the same round trip), read, replies, links, touches: the
    # same five statements for 40 conversations.
    assert len(calls["statements"]) == 5, calls["statements"]
    assert calls["statements"][0].startswith("SET LOCAL lock_timeout = 500; SELECT")
    assert "ORDER BY id FOR UPDATE" in calls["statements"][0]
    for conversation_id in conversations:
        groups = recorded_groups(conversation_id)
        assert answered_groups(client, conversation_id) == groups
        assert len(groups) == (2 if conversations.index(conversation_id) % 3 == 0 else 1)
    counts = redis_conn.hgetall("conversations:metrics")
    assert counts[b"flush_group_ready"] == b"40"
    assert counts[b"replies_quiet"] == str(40 + 14).encode()
    assert counts[b"lateness_count"] == str(40 + 14).encode()
    buckets = [int(v) for k, v in counts.items() if k.startswith(b"lateness_le_")]
    assert sum(buckets) == 40 + 14
    assert redis_conn.keys("conv:*") == []
    # The flushes the messages armed find nothing left: every group answered once.
    run_due_jobs()
    for conversation_id in conversations:
        assert answered_groups(client, conversation_id) == recorded_groups(conversation_id)


def test_replies_of_one_conversation_are_stamped_in_group_order(app, client, fake_clock):
    [conversation_id] = prepare(client, fake_clock, 1)
    jobs.flush_group([conversation_id])
    first, second = replies(client, conversation_id)
    assert first["timestamp"] < second["timestamp"]
    conversation = client.get(f"/conversations/{conversation_id}/").get_json()
    assert conversation["updated_at"] == second["timestamp"]


def test_a_mixed_batch_answers_only_the_ready_ones(app, client, fake_clock, redis_conn):
    ready, closed, unknown = (open_conversation(client) for _ in range(3))
    waiting, empty = open_conversation(client), open_conversation(client)
    first = send(client, ready)
    send(client, closed)
    post(client, close_conversation(closed), 200)
    # A buffer the close did not see (its message raced it): ready in Redis, closed in the
    # database.
    stale = [(uuid.uuid4(), fake_clock())]
    reply_buffer().add(uuid.UUID(closed), stale, fake_clock())
    reply_buffer().add(uuid.UUID(unknown), stale, fake_clock())
    [closing_reply] = replies(client, closed)
    fake_clock.advance(5)
    send(client, waiting)
    fake_clock.advance(1)

    batch = [ready, waiting, empty, closed, unknown, "not-an-id"]
    results = reply_pipeline.flush_groups(batch)
    assert results == {
        ready: "answered",
        waiting: "wait",
        empty: "empty",
        closed: "nothing",
        unknown: "nothing",
        "not-an-id": "failed",
    }
    with pytest.raises(RuntimeError, match="not-an-id"):
        jobs.flush_group(["not-an-id"])
    assert answered_groups(client, ready) == [[first]]
    assert replies(client, closed) == [closing_reply]
    assert replies(client, waiting) == []
    # The waiting conversation is armed again for the end of its quiet window.
    schedule = get_scheduler().scheduled_jobs_key
    entries = {e.decode(): s for e, s in redis_conn.zrange(schedule, 0, -1, withscores=True)}
    armed = [s for e, s in entries.items() if e.startswith(f"flush_group-{waiting}")]
    assert armed and max(armed) == pytest.approx((fake_clock() + 4_000_000) / 1e6)
    counts = redis_conn.hgetall("conversations:metrics")
    assert counts[b"flush_group_ready"] == b"3"
    assert counts[b"flush_group_wait"] == b"1"
    assert counts[b"flush_group_empty"] == b"1"
    fake_clock.advance(4)
    run_due_jobs()
    assert len(replies(client, waiting)) == 1


def test_delivery_on_writes_each_reply_with_its_outbox_row(make_app, fake_clock, redis_conn):
    app = make_app(REPLY_WEBHOOK_URL="http://127.0.0.1:9/hooks", REPLY_WEBHOOK_SECRETS=[SECRET])
    with app.app_context():
        client, conversations, calls = flush_a_batch(app, fake_clock)
        # The outbox rows in one statement more.
        assert len(calls["statements"]) == 6
        written = [r for c in conversations for r in replies(client, c)]
        assert len(written) == 6 + 2
        rows = db.session.execute(select(Delivery)).scalars().all()
        by_reply = {row.reply_id: row for row in rows}
        assert set(by_reply) == {uuid.UUID(r["id"]) for r in written}
        for reply in written:
            row = by_reply[uuid.UUID(reply["id"])]
            assert row.status == "pending" and row.attempts == 0
            assert row.created_at.isoformat() == reply["timestamp"].replace("Z", "+00:00")
        db.session.rollback()
        # One delivery pass queued for the whole batch.
        assert get_queue(DELIVERIES).count == 1


def test_generator_on_closes_each_group_once(make_app, fake_clock, redis_conn):
    app = make_app(REPLY_GENERATOR_URL="http://127.0.0.1:9/bot")
    with app.app_context():
        client, conversations, calls = flush_a_batch(app, fake_clock)
        # The generations rows instead of the replies.
        assert len(calls["statements"]) == 5
        assert "INSERT INTO generations" in calls["statements"][2]
        assert all(replies(client, c) == [] for c in conversations)
        closed = db.session.execute(select(Generation)).scalars().all()
        assert len(closed) == 6 + 2
        for conversation_id in conversations:
            groups = recorded_groups(conversation_id)
            rows = sorted(
                (g for g in closed if str(g.conversation_id) == conversation_id),
                key=lambda g: g.created_at,
            )
            assert [g.reply_id for g in rows] == [reply_id(group[0]) for group in groups]
            for group, row in zip(groups, rows, strict=True):
                linked = db.session.execute(
                    select(Message.id).where(Message.reply_id == row.reply_id)
                ).scalars()
                assert sorted(str(m) for m in linked) == sorted(group)
        db.session.rollback()
        assert get_queue(GENERATIONS).count == 1


def test_a_failing_batch_falls_back_to_one_transaction_each(
    app, client, fake_clock, caplog, monkeypatch
):
    # The migrations' logging setup disabled the loggers that existed then.
    monkeypatch.setattr(logging.getLogger(reply_pipeline.__name__), "disabled", False)
    conversations = prepare(client, fake_clock, 5)
    bad = conversations[2]
    # A row already holding the id of `bad`'s first reply: its INSERT fails, in the batch
    # and again on its own.
    [first, *_] = recorded_groups(bad)[0]
    elsewhere = open_conversation(client)
    db.session.execute(
        text(
            "INSERT INTO messages (id, conversation_id, type, content, timestamp, received_at,"
            " generated) VALUES (:id, :c, 'OUTBOUND', 'x', now(), now(), true)"
        ),
        {"id": reply_id(first), "c": uuid.UUID(elsewhere)},
    )
    db.session.commit()
    with caplog.at_level(logging.WARNING), database_calls() as calls:
        with pytest.raises(RuntimeError, match=bad) as failure:
            jobs.flush_group(conversations)
    assert "failed for 1 conversation(s)" in str(failure.value)
    # The batch's transaction rolled back, then one commit per conversation answered.
    assert calls["commits"] == 4
    assert [r.msg for r in caplog.records].count("flush_groups_fallback") == 1
    assert [r.conversation_id for r in caplog.records if r.msg == "flush_group_failed"] == [bad]
    for conversation_id in conversations:
        if conversation_id == bad:
            assert replies(client, bad) == []
            continue
        assert answered_groups(client, conversation_id) == recorded_groups(conversation_id)


def test_overlapping_batches_with_messages_arriving_answer_each_group_once(app, client, fake_clock):
    conversations = prepare(client, fake_clock, 30)
    batches = [conversations[:20], conversations[10:][::-1]]
    barrier = threading.Barrier(3)
    results, errors, arrived = [], [], []

    def worker(batch):
        with app.app_context():
            barrier.wait()
            try:
                results.append(jobs.flush_group(batch))
            except Exception as exc:
                errors.append(exc)

    def intake():
        with app.app_context(), app.test_client() as c:
            barrier.wait()
            for conversation_id in conversations[::2]:
                arrived.append(send(c, conversation_id))

    threads = [threading.Thread(target=worker, args=(b,)) for b in batches]
    threads.append(threading.Thread(target=intake))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    outcomes = [outcome for result in results for outcome in result.values()]
    assert "failed" not in outcomes
    fake_clock.advance(5)
    run_due_jobs()
    for conversation_id in conversations:
        assert answered_groups(client, conversation_id) == recorded_groups(conversation_id)
    assert len(arrived) == 15


def test_sqlite_flushes_a_batch_one_conversation_at_a_time(app_on_each_backend, fake_clock):
    client = app_on_each_backend.test_client()
    conversations = prepare(client, fake_clock, 3)
    assert jobs.flush_group(conversations) == dict.fromkeys(conversations, "answered")
    for conversation_id in conversations:
        assert answered_groups(client, conversation_id) == recorded_groups(conversation_id)
    assert reply_pipeline.flush_groups(conversations) == dict.fromkeys(conversations, "empty")


def lock_waits():
    """How many statements of the test database wait for a lock."""
    with db.engine.connect() as connection:
        return connection.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        ).scalar_one()


@pytest.mark.parametrize("flush", ["batch", "single"])
def test_a_message_waiting_behind_the_flush_lock_joins_its_group(app, client, fake_clock, flush):
    """The group closes by the clock read before the lock: a message stamped before the
    group's end, whose statement waits behind the flush's lock, still joins it."""
    conversation_id = open_conversation(client)
    first = send(client, conversation_id)
    fake_clock.advance(6)
    second = send(client, conversation_id)
    fake_clock.advance(4.9)  # [first] is closed by the gap; [second] is due in 0.1 s
    blocker = db.engine.connect()
    blocker.execute(
        text("SELECT 1 FROM conversations WHERE id = :id FOR UPDATE"),
        {"id": uuid.UUID(conversation_id)},
    )
    results, late = [], []

    def flush_it():
        with app.app_context():
            if flush == "batch":
                results.append(jobs.flush_group([conversation_id])[conversation_id])
            else:
                results.append(reply_pipeline.flush_group(conversation_id))

    def intake():
        with app.app_context(), app.test_client() as c:
            late.append(send(c, conversation_id))

    flusher = threading.Thread(target=flush_it)
    flusher.start()
    wait_for(lambda: lock_waits() == 1)
    fake_clock.advance(0.05)  # stamped before [second]'s end, queued behind the flush
    sender = threading.Thread(target=intake)
    sender.start()
    wait_for(lambda: lock_waits() == 2)
    fake_clock.advance(0.5)  # [second] is due by the time the flush holds the lock
    blocker.commit()
    blocker.close()
    flusher.join()
    sender.join()
    assert results == ["answered"]
    assert answered_groups(client, conversation_id) == [[first]]
    fake_clock.advance(5)
    run_due_jobs()
    assert answered_groups(client, conversation_id) == [[first], [second, *late]]
    assert recorded_groups(conversation_id) == [[first], [second, *late]]


def test_a_message_stamped_after_the_cutoff_does_not_close_a_group_by_its_gap(
    app, client, fake_clock
):
    """Only messages stamped by the cutoff decide which groups are closed: one stamped after
    it, visible already, must not close the group before it by its gap, since a message
    stamped before the cutoff may still be waiting behind the lock to join that group."""
    conversation_id = open_conversation(client)
    first = send(client, conversation_id)
    fake_clock.advance(6)
    send(client, conversation_id)  # [second]
    cutoff = fake_clock() + 5_000_000 - 2_000  # [second] is 2 ms short of its quiet window
    fake_clock.advance(5.0001)
    send(client, conversation_id)  # stamped after the cutoff, 5 s after [second]
    answers = reply_pipeline.answer_groups(
        [uuid.UUID(conversation_id)], fake_clock(), cutoff=cutoff
    )
    db.session.rollback()
    assert [a.message_ids for a in answers[uuid.UUID(conversation_id)]] == [[uuid.UUID(first)]]


def test_a_batch_gives_up_a_lock_held_too_long_and_answers_the_others(app, client, fake_clock):
    """A batch waiting on one conversation's row holds the rows locked before it; past
    BATCH_LOCK_TIMEOUT_MS it releases them and flushes one by one, so the others are answered
    while that one is still locked."""
    stuck, other = sorted([open_conversation(client), open_conversation(client)])
    groups = {c: send(client, c) for c in (stuck, other)}
    fake_clock.advance(5.5)
    blocker = db.engine.connect()
    blocker.execute(
        text("SELECT 1 FROM conversations WHERE id = :id FOR UPDATE"), {"id": uuid.UUID(stuck)}
    )
    results = []

    def flush_it():
        with app.app_context():
            results.append(jobs.flush_group([other, stuck]))

    flusher = threading.Thread(target=flush_it)
    flusher.start()
    try:
        # [stuck] sorts first, so the batch waits on it; without the timeout [other] would
        # wait for it too.
        wait_for(lambda: answered_groups(client, other) == [[groups[other]]], timeout=10)
        assert answered_groups(client, stuck) == []
    finally:
        blocker.commit()
        blocker.close()
        flusher.join()
    assert results == [{other: "answered", stuck: "answered"}]
    assert answered_groups(client, stuck) == [[groups[stuck]]]


def test_one_failed_acknowledgement_fails_that_conversation_only(
    app, client, fake_clock, redis_conn, monkeypatch
):
    """Answered and committed, one conversation's ACK fails (its buffer key broken between
    the commit and the ACK): it alone is reported failed; the others are acknowledged."""
    conversations = prepare(client, fake_clock, 4)
    broken = uuid.UUID(conversations[1])
    answer = reply_pipeline.answer_conversations

    def then_break_one(*args, **kwargs):
        done = answer(*args, **kwargs)
        redis_conn.set(keys(broken)[0], "not a sorted set")
        return done

    monkeypatch.setattr(reply_pipeline, "answer_conversations", then_break_one)
    results = reply_pipeline.flush_groups(conversations)
    assert results == {c: "failed" if c == str(broken) else "answered" for c in conversations}
    for conversation_id in conversations:
        assert len(replies(client, conversation_id)) == (
            2 if conversation_id in conversations[::3] else 1
        )
        if conversation_id != str(broken):
            assert redis_conn.exists(*keys(conversation_id)) == 0
