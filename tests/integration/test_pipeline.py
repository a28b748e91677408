"""The reply pipeline on real PostgreSQL, Redis and RQ workers, with the clock under control."""

import threading

import pytest
from sqlalchemy.exc import OperationalError

from service import jobs
from service.infra.buffer import ReplyBuffer, keys
from service.infra.database import MessageTransaction
from service.infra.queueing import _at, get_scheduler
from service.pipeline import groups
from service.pipeline import replies as reply_pipeline
from tests.helpers import (
    close_conversation,
    messages,
    new_conversation,
    new_id,
    new_message,
    open_conversation,
    post,
    replies,
    reply_ids,
    run_due_jobs,
    send,
)


def buffer_keys(redis_conn):
    return sorted(k.decode() for k in redis_conn.keys("conv:*"))


def test_single_message_is_answered_after_the_quiet_window(client, fake_clock, redis_conn):
    conversation_id = open_conversation(client)
    message_id = send(client, conversation_id)

    fake_clock.advance(4.9)
    run_due_jobs()
    assert replies(client, conversation_id) == []

    fake_clock.advance(0.1)
    run_due_jobs()
    [reply] = replies(client, conversation_id)
    assert reply["content"] == f"Mensagens recebidas:\n{message_id}\n"
    assert buffer_keys(redis_conn) == []


def test_messages_4_9_seconds_apart_form_one_group(client, fake_clock):
    conversation_id = open_conversation(client)
    first = send(client, conversation_id)
    fake_clock.advance(4.9)
    run_due_jobs()
    second = send(client, conversation_id)
    fake_clock.advance(4.9)
    run_due_jobs()
    assert replies(client, conversation_id) == []
    fake_clock.advance(0.1)
    run_due_jobs()
    [reply] = replies(client, conversation_id)
    assert reply_ids(reply) == [first, second]


def test_messages_5_1_seconds_apart_form_two_groups(client, fake_clock):
    conversation_id = open_conversation(client)
    first = send(client, conversation_id)
    fake_clock.advance(5.1)
    # The second message arrives before any job ran: the late flush must still split.
    second = send(client, conversation_id)
    run_due_jobs()
    assert [reply_ids(r) for r in replies(client, conversation_id)] == [[first]]
    fake_clock.advance(5.0)
    run_due_jobs()
    assert [reply_ids(r) for r in replies(client, conversation_id)] == [[first], [second]]


def test_burst_at_0_2_4_seconds_gives_one_reply_in_arrival_order(client, fake_clock):
    conversation_id = open_conversation(client)
    ids = []
    for _ in range(3):
        ids.append(send(client, conversation_id))
        fake_clock.advance(2)
        run_due_jobs()
    fake_clock.advance(3)
    run_due_jobs()
    [reply] = replies(client, conversation_id)
    assert reply_ids(reply) == ids
    recorded = [m["id"] for m in messages(client, conversation_id)]
    assert recorded == ids + [reply["id"]]


def test_messages_every_4_seconds_never_close_the_group_early(client, fake_clock):
    conversation_id = open_conversation(client)
    ids = []
    for _ in range(5):
        ids.append(send(client, conversation_id))
        fake_clock.advance(4)
        run_due_jobs()
        assert replies(client, conversation_id) == []
    fake_clock.advance(1)
    run_due_jobs()
    [reply] = replies(client, conversation_id)
    assert reply_ids(reply) == ids


def test_flush_job_run_twice_answers_once(client, fake_clock):
    conversation_id = open_conversation(client)
    send(client, conversation_id)
    fake_clock.advance(5)
    assert reply_pipeline.flush_group(conversation_id) == "answered"
    assert reply_pipeline.flush_group(conversation_id) == "empty"
    run_due_jobs()
    assert len(replies(client, conversation_id)) == 1


def test_two_workers_flushing_at_once_answer_once(app, client, fake_clock):
    conversation_id = open_conversation(client)
    send(client, conversation_id)
    fake_clock.advance(5)
    barrier = threading.Barrier(4)
    results = []

    def flush():
        with app.app_context():
            barrier.wait()
            results.append(reply_pipeline.flush_group(conversation_id))

    threads = [threading.Thread(target=flush) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("answered") == 1
    assert len(replies(client, conversation_id)) == 1


def test_twenty_five_concurrent_messages_get_one_reply(app, client, fake_clock):
    conversation_id = open_conversation(client)
    ids = [new_id() for _ in range(25)]
    barrier = threading.Barrier(len(ids))
    statuses = []

    def deliver(message_id):
        with app.test_client() as c:
            barrier.wait()
            statuses.append(
                c.post("/webhook/", json=new_message(message_id, conversation_id)).status_code
            )

    threads = [threading.Thread(target=deliver, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [202] * 25
    fake_clock.advance(5)
    run_due_jobs()
    [reply] = replies(client, conversation_id)
    assert sorted(reply_ids(reply)) == sorted(ids)


def test_message_arriving_while_its_group_is_answered_joins_the_next(
    client, fake_clock, monkeypatch
):
    conversation_id = open_conversation(client)
    first = send(client, conversation_id)
    fake_clock.advance(5)
    late = []
    ack = ReplyBuffer.ack

    def ack_after_a_new_message(self, *args):
        if not late:
            late.append(send(client, conversation_id))
        return ack(self, *args)

    monkeypatch.setattr(ReplyBuffer, "ack", ack_after_a_new_message)
    run_due_jobs()
    assert [reply_ids(r) for r in replies(client, conversation_id)] == [[first]]
    fake_clock.advance(5)
    run_due_jobs()
    assert [reply_ids(r) for r in replies(client, conversation_id)] == [[first], late]


def test_flush_failing_before_commit_is_recovered_by_reconcile(
    client, fake_clock, monkeypatch, redis_conn
):
    conversation_id = open_conversation(client)
    message_id = send(client, conversation_id)
    fake_clock.advance(5)

    def crash(*args, **kwargs):
        raise RuntimeError("worker died")

    with monkeypatch.context() as patch, pytest.raises(RuntimeError):
        patch.setattr(reply_pipeline, "answer_groups", crash)
        reply_pipeline.flush_group(conversation_id)
    assert replies(client, conversation_id) == []

    fake_clock.advance(3.5)
    assert [str(c) for c in reply_pipeline.reconcile_groups()] == [conversation_id]
    run_due_jobs()
    [reply] = replies(client, conversation_id)
    assert reply_ids(reply) == [message_id]
    assert reply_pipeline.reconcile_groups() == []


def test_flush_failing_after_commit_does_not_answer_twice(client, fake_clock, monkeypatch):
    conversation_id = open_conversation(client)
    send(client, conversation_id)
    fake_clock.advance(5)
    with monkeypatch.context() as patch, pytest.raises(RuntimeError):
        patch.setattr(ReplyBuffer, "ack", lambda *a: (_ for _ in ()).throw(RuntimeError()))
        reply_pipeline.flush_group(conversation_id)
    fake_clock.advance(60)
    reply_pipeline.reconcile_groups()
    run_due_jobs()
    assert reply_pipeline.flush_group(conversation_id) in ("empty", "nothing")
    assert len(replies(client, conversation_id)) == 1


def test_redis_flushed_mid_window_messages_are_still_answered(client, fake_clock, redis_conn):
    conversation_id = open_conversation(client)
    first = send(client, conversation_id)
    redis_conn.flushdb()
    fake_clock.advance(1)
    second = send(client, conversation_id)
    fake_clock.advance(5)
    run_due_jobs()
    [reply] = replies(client, conversation_id)
    assert reply_ids(reply) == [first, second]


def test_redis_flushed_with_no_further_message_reconcile_answers(client, fake_clock, redis_conn):
    conversation_id = open_conversation(client)
    message_id = send(client, conversation_id)
    redis_conn.flushdb()
    fake_clock.advance(5)
    run_due_jobs()
    assert replies(client, conversation_id) == []
    fake_clock.advance(3.5)
    reply_pipeline.reconcile_groups()
    run_due_jobs()
    [reply] = replies(client, conversation_id)
    assert reply_ids(reply) == [message_id]


def test_close_answers_the_open_group_at_once(client, fake_clock, redis_conn):
    conversation_id = open_conversation(client)
    ids = [send(client, conversation_id)]
    fake_clock.advance(1)
    ids.append(send(client, conversation_id))
    post(client, close_conversation(conversation_id), 200)
    [reply] = replies(client, conversation_id)
    assert reply_ids(reply) == ids
    assert buffer_keys(redis_conn) == []
    fake_clock.advance(10)
    run_due_jobs()
    reply_pipeline.reconcile_groups()
    assert len(replies(client, conversation_id)) == 1
    post(client, new_message(new_id(), conversation_id), 400)


def test_close_with_nothing_pending_adds_no_reply(client):
    conversation_id = open_conversation(client)
    post(client, close_conversation(conversation_id), 200)
    assert messages(client, conversation_id) == []


def test_held_message_joins_at_5_9_seconds(client, fake_clock, redis_conn):
    conversation_id, message_id = new_id(), new_id()
    response = post(client, new_message(message_id, conversation_id), 202)
    assert response.get_json()["status"] == "held"
    fake_clock.advance(5.9)
    post(client, new_conversation(conversation_id), 201)
    # Grouped as if it had arrived in the conversation: its window is already over.
    run_due_jobs()
    [reply] = replies(client, conversation_id)
    assert reply_ids(reply) == [message_id]
    assert client.get("/held/").get_json()["items"] == []
    assert buffer_keys(redis_conn) == []


def test_held_message_expires_at_6_1_seconds(client, fake_clock, runner):
    conversation_id, message_id = new_id(), new_id()
    post(client, new_message(message_id, conversation_id), 202)
    fake_clock.advance(6.1)
    post(client, new_conversation(conversation_id), 201)
    run_due_jobs()
    assert messages(client, conversation_id) == []
    response = post(client, new_message(message_id, conversation_id), 400)
    assert response.get_json()["error"] == "message_expired"
    [held] = client.get("/held/?status=EXPIRED").get_json()["items"]
    assert held["id"] == message_id
    result = runner.invoke(args=["held", "list", "--expired"])
    assert message_id in result.output


def test_expired_hold_records_are_pruned_after_their_retention(client, fake_clock, runner):
    expired_id, waiting_id = new_id(), new_id()
    post(client, new_message(expired_id, new_id()), 202)
    fake_clock.advance(6.1)
    assert jobs.expire_held() == 1
    post(client, new_message(waiting_id, new_id()), 202)

    fake_clock.advance(23 * 3600)
    result = runner.invoke(args=["prune_held", "--older-than", "1"])
    assert result.exit_code == 0 and "deleted 0 " in result.output
    fake_clock.advance(2 * 3600)
    result = runner.invoke(args=["prune_held", "--older-than", "1"])
    assert "deleted 1 " in result.output

    remaining = client.get("/held/").get_json()["items"]
    assert [h["id"] for h in remaining] == [waiting_id]  # a waiting hold is never pruned


def test_expiry_job_drops_held_messages_whose_conversation_never_came(client, fake_clock):
    message_id = new_id()
    conversation_id = new_id()
    post(client, new_message(message_id, conversation_id), 202)
    fake_clock.advance(6)
    assert jobs.expire_held() == 0
    fake_clock.advance(0.1)
    assert jobs.expire_held() == 1
    response = post(client, new_message(message_id, conversation_id), 400)
    assert response.get_json()["error"] == "message_expired"


def test_held_messages_join_in_arrival_order_with_later_ones(client, fake_clock):
    conversation_id = new_id()
    held = [send(client, conversation_id), None]
    fake_clock.advance(1)
    held[1] = send(client, conversation_id)
    fake_clock.advance(1)
    post(client, new_conversation(conversation_id), 201)
    fake_clock.advance(2)
    later = send(client, conversation_id)
    fake_clock.advance(4.9)
    run_due_jobs()
    assert replies(client, conversation_id) == []
    fake_clock.advance(0.1)
    run_due_jobs()
    [reply] = replies(client, conversation_id)
    assert reply_ids(reply) == held + [later]


def hold_behind_its_conversation(message_id, conversation_id, at_us):
    """Write a hold as if it committed just after its conversation's creation looked."""
    from service.domain.clock import to_datetime
    from service.extensions import db
    from service.infra.models import HeldMessage

    moment = to_datetime(at_us)
    db.session.add(
        HeldMessage(
            id=message_id,
            conversation_id=conversation_id,
            type="INBOUND",
            content="x",
            timestamp=moment,
            received_at=moment,
            status="HELD",
        )
    )
    db.session.commit()


def test_held_message_racing_its_conversation_is_joined_by_the_expiry_job(app, client, fake_clock):
    conversation_id, message_id = new_id(), new_id()
    post(client, new_conversation(conversation_id), 201)
    hold_behind_its_conversation(message_id, conversation_id, fake_clock())
    jobs.expire_held()
    fake_clock.advance(5)
    run_due_jobs()
    [reply] = replies(client, conversation_id)
    assert reply_ids(reply) == [message_id]


def test_buffer_keys_share_one_hash_tag():
    buffer, armed = keys("abc")
    assert buffer.split("{")[1].split("}")[0] == armed.split("{")[1].split("}")[0] == "abc"


def test_a_burst_keeps_one_flush_pending(app, client, fake_clock, redis_conn):
    conversation_id = open_conversation(client)
    with app.app_context():
        schedule = get_scheduler().scheduled_jobs_key

    def pending():
        entries = redis_conn.zrange(schedule, 0, -1)
        return [e for e in entries if e.decode().startswith(f"flush_group-{conversation_id}")]

    for _ in range(3):
        send(client, conversation_id)
        assert len(pending()) == 1
        fake_clock.advance(2)
        run_due_jobs()
    fake_clock.advance(3)
    run_due_jobs()
    assert len(replies(client, conversation_id)) == 1
    assert pending() == []
    # Messages do not touch the pending flush: the one due 5 s after the first message found
    # the group still active and re-armed once, for the end of the group.
    counts = redis_conn.hgetall("conversations:metrics")
    assert counts[b"flush_group_wait"] == b"1"
    assert counts[b"flush_group_ready"] == b"1"


def test_held_message_racing_a_closed_conversation_is_dropped_not_joined(client, fake_clock):
    conversation_id, message_id = new_id(), new_id()
    post(client, new_conversation(conversation_id), 201)
    hold_behind_its_conversation(message_id, conversation_id, fake_clock())
    # ...and the conversation closed before the expiry job came round.
    post(client, close_conversation(conversation_id), 200)
    assert jobs.expire_held() == 1
    assert messages(client, conversation_id) == []
    [held] = client.get(f"/held/?conversation_id={conversation_id}").get_json()["items"]
    assert held["status"] == "EXPIRED"
    response = post(client, new_message(message_id, conversation_id), 400)
    assert response.get_json()["error"] in ("message_expired", "conversation_closed")


def test_a_new_group_is_scheduled_by_its_buffer_write(
    app, client, fake_clock, redis_conn, monkeypatch
):
    """The first message of a group puts its flush in the schedule in the same Redis round
    trip as its buffer entry, due when the quiet window ends, exactly as `add_flushes` writes
    it; the next message of the group schedules nothing."""
    conversation_id = open_conversation(client)
    with app.app_context():
        schedule = get_scheduler().scheduled_jobs_key
    calls = []
    with monkeypatch.context() as patch:  # not undo(): the clock is patched too
        patch.setattr(groups, "schedule_flushes", lambda due: calls.append(due))
        send(client, conversation_id)
        arrival = int(redis_conn.zrange(keys(conversation_id)[0], 0, -1, withscores=True)[0][1])
        fake_clock.advance(1)
        send(client, conversation_id)

    assert calls == []  # neither message needed a round trip of its own to schedule
    [(entry, score)] = redis_conn.zrange(schedule, 0, -1, withscores=True)
    assert entry.decode().startswith(f"flush_group-{conversation_id}-")
    assert score == _at(arrival + 5_000_000).timestamp()

    fake_clock.advance(4)
    run_due_jobs()
    assert replies(client, conversation_id) == []  # re-armed for the second message
    fake_clock.advance(1)
    run_due_jobs()
    assert len(replies(client, conversation_id)) == 1


def test_a_message_whose_commit_fails_leaves_a_flush_that_answers_nothing(
    app, client, fake_clock, redis_conn, monkeypatch
):
    """The flush scheduled with the buffer entry outlives a failed commit: it finds the entry
    withdrawn and nothing to answer, and the retried message is answered once."""
    conversation_id = open_conversation(client)
    with app.app_context():
        schedule = get_scheduler().scheduled_jobs_key

    def commit_fails(self):
        raise OperationalError("COMMIT", {}, Exception("server closed the connection"))

    message_id = new_id()
    with monkeypatch.context() as patch:  # not undo(): the clock is patched too
        patch.setattr(MessageTransaction, "commit", commit_fails)
        post(client, new_message(message_id, conversation_id), 503)
    assert redis_conn.zcard(schedule) == 1
    assert buffer_keys(redis_conn) == []

    fake_clock.advance(5)
    run_due_jobs()
    assert messages(client, conversation_id) == []

    send(client, conversation_id, message_id)
    fake_clock.advance(5)
    run_due_jobs()
    [reply] = replies(client, conversation_id)
    assert reply_ids(reply) == [message_id]


def test_a_flush_lost_while_the_commit_was_paused_is_queued_again(
    app, client, fake_clock, redis_conn, monkeypatch
):
    """The flush a message's buffer write scheduled may come due, find the row still locked
    and give up while its web process is paused before the commit: after the commit the
    message queues another, so its group waits for no reconciliation."""
    conversation_id = open_conversation(client)
    with app.app_context():
        schedule = get_scheduler().scheduled_jobs_key
    commit = MessageTransaction.commit

    def paused_commit(self):
        fake_clock.advance(6)
        # The scheduler took the entry meanwhile and its flush failed on the row lock.
        prefix = f"flush_group-{conversation_id}".encode()
        [entry] = [e for e in redis_conn.zrange(schedule, 0, -1) if e.startswith(prefix)]
        redis_conn.zrem(schedule, entry)
        commit(self)

    with monkeypatch.context() as patch:  # not undo(): the clock is patched too
        patch.setattr(MessageTransaction, "commit", paused_commit)
        message_id = send(client, conversation_id)

    run_due_jobs()
    [reply] = replies(client, conversation_id)
    assert reply_ids(reply) == [message_id]
