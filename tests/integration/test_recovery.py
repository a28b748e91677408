"""What the pipeline rebuilds after a fault, on real PostgreSQL, Redis and RQ, with the clock
under control: exact groups after Redis lost its data, no conversation left waiting on a
failed flush, periodic jobs and worker registrations restored, bounded waits."""

import uuid

import redis.exceptions
from rq.registry import FailedJobRegistry

from service.extensions import redis_client
from service.infra import queueing
from service.infra.queueing import SCHEDULER_LOCK_MS, get_queue, get_scheduler, get_worker
from service.pipeline import replies as reply_pipeline
from tests.helpers import (
    close_conversation,
    open_conversation,
    post,
    replies,
    reply_ids,
    run_due_jobs,
    send,
)


def groups(client, conversation_id):
    return [reply_ids(reply) for reply in replies(client, conversation_id)]


def test_redis_flushed_between_two_groups_keeps_them_apart(client, fake_clock, redis_conn):
    """Issue 11, scenario 2: m1 at 0 s, FLUSHALL at 3 s, m2 at 6.5 s: two replies."""
    conversation_id = open_conversation(client)
    first = send(client, conversation_id)
    fake_clock.advance(3)
    redis_conn.flushdb()
    fake_clock.advance(3.5)
    second = send(client, conversation_id)
    fake_clock.advance(5)
    run_due_jobs()
    assert groups(client, conversation_id) == [[first], [second]]


def test_a_failed_flush_does_not_hold_up_the_next_groups(client, fake_clock, monkeypatch):
    """Issue 11, scenario 1: the flush fails (database down) and leaves its marker behind;
    the next message takes it as lost and arms a new flush, so the groups are answered once
    the database is back, on time from then on."""
    conversation_id = open_conversation(client)
    first = send(client, conversation_id)
    fake_clock.advance(5)
    with monkeypatch.context() as patch:

        def database_down(*args, **kwargs):
            raise RuntimeError("database down")

        patch.setattr(reply_pipeline, "answer_groups", database_down)
        get_scheduler().enqueue_jobs()
        get_worker().work(burst=True)
    failed = FailedJobRegistry(queue=get_queue())
    assert failed.count == 1
    for job_id in failed.get_job_ids():
        failed.remove(job_id)
    fake_clock.advance(2.5)
    second = send(client, conversation_id)
    fake_clock.advance(5)
    run_due_jobs()
    assert groups(client, conversation_id) == [[first], [second]]
    third = send(client, conversation_id)
    fake_clock.advance(5)
    run_due_jobs()
    assert groups(client, conversation_id) == [[first], [second], [third]]


def test_reconcile_answers_an_overdue_group_of_a_busy_conversation(client, fake_clock, redis_conn):
    """A lost group is found even while its conversation keeps receiving messages, and the
    group still growing is left to its own flush."""
    conversation_id = open_conversation(client)
    lost = send(client, conversation_id)
    redis_conn.flushdb()
    fake_clock.advance(6)
    busy = [send(client, conversation_id)]
    for _ in range(3):
        fake_clock.advance(2)
        busy.append(send(client, conversation_id))
    assert reply_pipeline.reconcile_groups() == [uuid.UUID(conversation_id)]
    run_due_jobs()
    assert groups(client, conversation_id) == [[lost]]
    fake_clock.advance(5)
    run_due_jobs()
    assert groups(client, conversation_id) == [[lost], busy]


def test_a_group_still_growing_is_not_overdue(client, fake_clock, redis_conn):
    conversation_id = open_conversation(client)
    send(client, conversation_id)
    for _ in range(5):
        fake_clock.advance(3)
        send(client, conversation_id)
    assert reply_pipeline.reconcile_groups() == []


def test_close_answers_each_group_in_order(client, fake_clock, redis_conn):
    conversation_id = open_conversation(client)
    first = send(client, conversation_id)
    redis_conn.flushdb()  # the first group's flush is lost with the buffer
    fake_clock.advance(7)
    second = send(client, conversation_id)
    post(client, close_conversation(conversation_id), 200)
    assert groups(client, conversation_id) == [[first], [second]]


def test_periodic_jobs_come_back_after_redis_lost_them(app, redis_conn):
    scheduler = get_scheduler()
    scheduler.ensure_periodic(force=True)
    scheduled = set(redis_conn.zrange(scheduler.scheduled_jobs_key, 0, -1))
    assert scheduled == {b"expire_held", b"reconcile_groups"}
    redis_conn.flushdb()
    scheduler.ensure_periodic()
    assert set(redis_conn.zrange(scheduler.scheduled_jobs_key, 0, -1)) == scheduled
    # A record that expired (no worker ran the job for a while) is restored too.
    redis_conn.delete("rq:job:expire_held")
    scheduler.ensure_periodic()
    assert redis_conn.exists("rq:job:expire_held")
    assert redis_conn.ttl("rq:job:expire_held") == -1


def test_a_worker_registers_again_after_redis_lost_its_registration(app, client, redis_conn):
    worker = get_worker()
    worker.register_birth()
    try:
        assert queueing.live_workers() == 1
        redis_conn.flushdb()
        assert queueing.live_workers() == 0
        worker.heartbeat()
        assert queueing.live_workers() == 1
    finally:
        worker.register_death()


def test_readiness_leaves_the_redis_timeouts_alone(app, client, redis_conn):
    """RQ's Worker.all() would raise the read timeout of the connection it is given."""
    kwargs = redis_client.client.connection_pool.connection_kwargs
    before = kwargs["socket_timeout"]
    client.get("/readyz")
    get_worker()
    assert kwargs["socket_timeout"] == before == 2


def test_a_lock_left_by_a_killed_scheduler_expires_within_a_second(app, redis_conn):
    scheduler = get_scheduler()
    assert scheduler.acquire_lock()
    # The process dies here, without remove_lock().
    assert 0 < redis_conn.pttl(scheduler.scheduler_lock_key) <= SCHEDULER_LOCK_MS
    scheduler._lock_acquired = False


def test_the_scheduler_waits_out_redis(app, monkeypatch):
    """A connection error in the run loop is waited out, not a reason to exit."""
    scheduler = get_scheduler()
    calls = []

    def flaky_heartbeat():
        calls.append(1)
        if len(calls) < 3:
            raise redis.exceptions.ConnectionError("Redis went away")

    monkeypatch.setattr(scheduler, "heartbeat", flaky_heartbeat)
    monkeypatch.setattr(queueing.Backoff, "wait", lambda self: None)
    scheduler.run(burst=True)
    assert len(calls) == 3


def test_due_flushes_still_run_after_the_replies_were_written(client, fake_clock):
    """Two groups' worth of messages answered by one flush leave nothing for the next."""
    conversation_id = open_conversation(client)
    first = send(client, conversation_id)
    fake_clock.advance(5.5)
    second = send(client, conversation_id)
    fake_clock.advance(5)
    run_due_jobs()
    run_due_jobs()
    assert groups(client, conversation_id) == [[first], [second]]
