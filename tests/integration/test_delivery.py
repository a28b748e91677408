"""Reply delivery (issue 13) on real PostgreSQL, Redis and RQ, to a real HTTP receiver that
verifies every request with the `standardwebhooks` library, with the clock under control.

The receiver is pytest-httpserver's server, threaded, so one blocked or slow answer does not
hold up the others.
"""

import json
import threading
import uuid
from collections import deque

import pytest
from flask_migrate import upgrade
from sqlalchemy import func, select
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from werkzeug import Response

from service import create_app
from service.domain.clock import to_us
from service.domain.delivery import DEAD, DELIVERED, PENDING
from service.extensions import db
from service.infra import metrics, queueing
from service.infra.models import Delivery
from service.infra.notices import channel
from service.infra.queueing import (
    DELIVER_JOB,
    DELIVERIES,
    flush_now,
    get_queue,
    live_workers,
    periodic_jobs,
    queue_name,
)
from service.pipeline import deliveries
from service.pipeline import replies as reply_pipeline
from tests import conftest
from tests.helpers import (
    close_conversation,
    http_peer,
    open_conversation,
    post,
    replies,
    row_of,
    run_due_jobs,
    send,
    wait_for,
)
from tests.stack import LiveStack, stack_env

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
# A second secret: the receiver knows only the first, and rotation means both sign.
OLD_SECRET = "whsec_c2VjcmV0LW9mLWxhc3QteWVhcg=="


class Receiver:
    """A team's receiver: verifies each request with the library, records it, and answers as
    told (`script`: answers in order, then `default`). An answer is a status, a (status,
    headers) pair, or a callable run first (to block) that returns one of them."""

    def __init__(self, server):
        self.server = server
        self.lock = threading.Lock()
        self.seen = []
        self.delivered = set()
        self.out_of_order = []
        self.script = deque()
        self.default = 200
        self.release = threading.Event()
        # {conversation_id: reply ids in order}, for the order check in `handle`.
        self.order = {}
        server.expect_request("/hooks", method="POST").respond_with_handler(self.handle)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.port}/hooks"

    def answer(self, *answers):
        with self.lock:
            self.script.extend(answers)

    def blocked(self, timeout=30):
        """An answer that waits until the test releases it (or `timeout`), then says 200."""

        def wait():
            self.release.wait(timeout)
            return 200

        return wait

    def handle(self, request):
        body = request.get_data()
        headers = dict(request.headers)
        try:
            payload = Webhook(SECRET).verify(body, headers)
            verified = True
        except WebhookVerificationError:
            payload, verified = json.loads(body), False
        with self.lock:
            self.seen.append(
                {
                    "id": headers.get("Webhook-Id"),
                    "verified": verified,
                    "payload": payload,
                    "content_type": headers.get("Content-Type"),
                    "signatures": headers.get("Webhook-Signature", "").split(" "),
                }
            )
            answer = self.script.popleft() if self.script else self.default
        if callable(answer):
            answer = answer()
        status, extra = answer if isinstance(answer, tuple) else (answer, {})
        if 200 <= status < 300:
            with self.lock:
                # The one before it in its conversation must have had its 2xx already.
                data = payload["data"]
                before = self.order.get(data["conversation_id"], [])
                index = before.index(data["reply_id"]) if data["reply_id"] in before else 0
                if any(r not in self.delivered for r in before[:index]):
                    self.out_of_order.append(data["reply_id"])
                self.delivered.add(data["reply_id"])
        return Response("", status=status, headers=extra)

    def ids(self, conversation_id=None):
        """The webhook-ids received, in arrival order (of one conversation's replies)."""
        with self.lock:
            return [
                s["id"]
                for s in self.seen
                if conversation_id in (None, s["payload"]["data"]["conversation_id"])
            ]


@pytest.fixture
def receiver():
    """A real HTTP receiver on a free local port, answering 200 unless told otherwise."""
    with http_peer(Receiver) as receiver:
        yield receiver


def delivery_config(receiver, **overrides):
    return {
        "REPLY_WEBHOOK_URL": receiver.url,
        "REPLY_WEBHOOK_SECRETS": [SECRET, OLD_SECRET],
        "DELIVERY_TIMEOUT_SECONDS": 2.0,
        "DELIVERY_RETRY_HOURS": 24.0,
        "DELIVERY_MAX_BACKOFF_SECONDS": 30.0,
        **overrides,
    }


@pytest.fixture
def delivery_app(make_app, receiver):
    """An app delivering replies to `receiver`, inside its app context."""
    app = make_app(**delivery_config(receiver))
    with app.app_context():
        yield app


@pytest.fixture
def client(delivery_app):
    """HTTP client of the delivering app."""
    return delivery_app.test_client()


def row(reply_id):
    """The delivery of a reply, as a dict (None when there is none)."""
    return row_of(Delivery, reply_id)


def one_reply(client, fake_clock):
    """A conversation with one message, answered after the quiet window by a flush job (not
    delivered yet). Returns (conversation_id, message_id, reply)."""
    conversation_id = open_conversation(client)
    message_id = send(client, conversation_id)
    fake_clock.advance(5)
    assert reply_pipeline.flush_group(conversation_id) == "answered"
    [reply] = replies(client, conversation_id)
    return conversation_id, message_id, reply


def conversation_with_groups(client, fake_clock, groups):
    """A conversation with `groups` one-message groups, all answered by its close. Returns
    (conversation_id, reply ids in order)."""
    conversation_id = open_conversation(client)
    for _ in range(groups):
        send(client, conversation_id)
        fake_clock.advance(5.1)
    post(client, close_conversation(conversation_id), 200)
    ids = [r["id"] for r in replies(client, conversation_id)]
    assert len(ids) == groups
    return conversation_id, ids


def test_a_reply_is_delivered_once_signed_with_its_id(client, fake_clock, receiver, redis_conn):
    live = redis_conn.pubsub(ignore_subscribe_messages=True)
    live.subscribe(channel())
    conversation_id = open_conversation(client)
    first = send(client, conversation_id)
    fake_clock.advance(1)
    second = send(client, conversation_id)
    fake_clock.advance(5)
    # The flush job stores the reply with its delivery and queues the delivery job.
    run_due_jobs()
    [reply] = replies(client, conversation_id)

    [seen] = receiver.seen
    assert seen["verified"]
    assert seen["id"] == reply["id"]
    assert seen["content_type"] == "application/json"
    assert len(seen["signatures"]) == 2
    assert seen["payload"]["type"] == "reply.created"
    assert seen["payload"]["data"] == {
        "conversation_id": conversation_id,
        "reply_id": reply["id"],
        "content": reply["content"],
        "message_ids": [first, second],
        "created_at": seen["payload"]["data"]["created_at"],
    }
    delivery = row(reply["id"])
    assert delivery["status"] == DELIVERED
    assert delivery["attempts"] == 1
    assert delivery["last_status"] == 200
    assert delivery["next_attempt_at"] is None and delivery["leased_until"] is None
    assert delivery["created_at"] == delivery["delivered_at"]  # the clock is frozen

    # Nothing more to send: another pass sends nothing.
    assert deliveries.deliver_replies() == {"delivered": 0, "retry": 0, "dead": 0}
    assert len(receiver.seen) == 1

    text = metrics.render(redis_conn, dict)[0].decode()
    assert 'delivery_attempts_total{outcome="delivered"} 1.0' in text
    assert 'deliveries_total{outcome="delivered"} 1.0' in text
    assert "delivery_latency_seconds_count 1.0" in text

    def delivery_notice():
        message = live.get_message(timeout=0.1)
        notice = json.loads(message["data"]) if message else {}
        return notice if notice.get("event") == "delivery.updated" else None

    assert wait_for(delivery_notice) == {
        "event": "delivery.updated",
        "conversation_id": conversation_id,
        "reply_id": reply["id"],
        "status": DELIVERED,
    }
    live.close()


def test_delivery_is_off_by_default(make_app, fake_clock, receiver, redis_conn):
    app = make_app()
    with app.app_context():
        assert app.config["REPLY_WEBHOOK_URL"] is None
        client = app.test_client()
        conversation_id = open_conversation(client)
        send(client, conversation_id)
        fake_clock.advance(5)
        assert reply_pipeline.flush_group(conversation_id) == "answered"
        post(client, close_conversation(open_conversation(client)), 200)
        assert db.session.execute(select(func.count()).select_from(Delivery)).scalar_one() == 0
        db.session.rollback()
        assert get_queue().jobs == get_queue(DELIVERIES).jobs == []
        assert "deliver_replies" not in periodic_jobs()
        assert deliveries.deliver_replies() == {"delivered": 0, "retry": 0, "dead": 0}
        assert app.test_cli_runner().invoke(args=["deliver_replies"]).exit_code == 1
    assert receiver.seen == []


def test_the_periodic_pass_is_scheduled_when_delivery_is_on(delivery_app):
    # On the deliveries queue: a pass must never hold up the flushes of the replies queue.
    assert periodic_jobs()["deliver_replies"] == (DELIVER_JOB, 1, queue_name(DELIVERIES))
    assert queue_name(DELIVERIES) != queue_name()


def test_a_close_queues_its_replies_delivery(client, fake_clock, receiver):
    conversation_id, ids = conversation_with_groups(client, fake_clock, 2)
    assert [job.func_name for job in get_queue(DELIVERIES).jobs] == [DELIVER_JOB]
    assert get_queue().jobs == []
    fake_clock.advance(1)
    run_due_jobs()
    assert receiver.ids() == ids
    assert [row(i)["status"] for i in ids] == [DELIVERED, DELIVERED]


def test_500_is_retried_after_the_backoff(client, fake_clock, receiver):
    receiver.answer(500, 503)
    _, _, reply = one_reply(client, fake_clock)
    assert deliveries.deliver_replies() == {"delivered": 0, "retry": 1, "dead": 0}
    delivery = row(reply["id"])
    assert delivery["status"] == PENDING
    assert (delivery["last_status"], delivery["last_error"]) == (500, "HTTP 500")
    # Full jitter: due within the first backoff (1 s), not before it was recorded.
    waited = (to_us(delivery["next_attempt_at"]) - fake_clock.us) / 1_000_000
    assert 0 <= waited <= 1
    fake_clock.advance(waited)
    assert deliveries.deliver_replies()["retry"] == 1
    waited = (to_us(row(reply["id"])["next_attempt_at"]) - fake_clock.us) / 1_000_000
    assert 0 <= waited <= 2
    fake_clock.advance(waited)
    assert deliveries.deliver_replies()["delivered"] == 1
    assert receiver.ids() == [reply["id"]] * 3
    assert all(s["verified"] for s in receiver.seen)
    delivery = row(reply["id"])
    assert (delivery["status"], delivery["attempts"], delivery["last_error"]) == (
        DELIVERED,
        3,
        None,
    )


def test_429_waits_for_its_retry_after(client, fake_clock, receiver):
    receiver.answer((429, {"Retry-After": "120"}))
    _, _, reply = one_reply(client, fake_clock)
    deliveries.deliver_replies()
    assert to_us(row(reply["id"])["next_attempt_at"]) == fake_clock.us + 120_000_000
    fake_clock.advance(119)
    assert deliveries.deliver_replies() == {"delivered": 0, "retry": 0, "dead": 0}
    fake_clock.advance(1)
    assert deliveries.deliver_replies()["delivered"] == 1
    assert receiver.ids() == [reply["id"]] * 2


def test_a_receiver_slower_than_the_timeout_is_retried(make_app, fake_clock, receiver):
    app = make_app(**delivery_config(receiver, DELIVERY_TIMEOUT_SECONDS=0.3))
    with app.app_context():
        receiver.answer(receiver.blocked())
        _, _, reply = one_reply(app.test_client(), fake_clock)
        assert deliveries.deliver_replies()["retry"] == 1
        delivery = row(reply["id"])
        assert (delivery["last_status"], delivery["last_error"]) == (None, "timeout after 0.3 s")
        fake_clock.advance(1)
        assert deliveries.deliver_replies()["delivered"] == 1
        assert receiver.ids() == [reply["id"]] * 2


def test_400_is_dead_at_once(client, fake_clock, receiver):
    receiver.answer(400)
    _, _, reply = one_reply(client, fake_clock)
    assert deliveries.deliver_replies() == {"delivered": 0, "retry": 0, "dead": 1}
    delivery = row(reply["id"])
    assert (delivery["status"], delivery["last_error"]) == (DEAD, "HTTP 400: not retried")
    assert delivery["next_attempt_at"] is None
    fake_clock.advance(3600)
    assert deliveries.deliver_replies()["dead"] == 0
    assert len(receiver.seen) == 1


def test_gave_up_after_the_retry_window(client, fake_clock, receiver):
    receiver.default = 503
    _, _, reply = one_reply(client, fake_clock)
    assert deliveries.deliver_replies()["retry"] == 1
    for _ in range(3):
        fake_clock.advance(8 * 3600)
        deliveries.deliver_replies()
    delivery = row(reply["id"])
    assert delivery["status"] == DEAD
    assert delivery["last_error"] == "gave up after 24 h: HTTP 503"
    assert delivery["attempts"] == len(receiver.seen) == 4
    fake_clock.advance(3600)
    assert deliveries.deliver_replies()["retry"] == 0


def test_an_operator_retry_of_a_dead_delivery(client, fake_clock, receiver):
    receiver.answer(400)
    _, _, reply = one_reply(client, fake_clock)
    deliveries.deliver_replies()
    assert row(reply["id"])["status"] == DEAD
    fake_clock.advance(48 * 3600)
    get_queue(DELIVERIES).empty()
    # Unknown and not-dead ids are left alone.
    assert deliveries.retry_deliveries([uuid.uuid4()]) == 0
    assert deliveries.retry_deliveries([uuid.UUID(reply["id"])]) == 1
    delivery = row(reply["id"])
    assert delivery["status"] == PENDING
    assert (delivery["attempts"], delivery["last_error"]) == (1, "HTTP 400: not retried")
    # A new window: not given up at once although the reply is two days old.
    assert to_us(delivery["retry_from"]) == to_us(delivery["next_attempt_at"]) == fake_clock.us
    assert deliveries.retry_deliveries([uuid.UUID(reply["id"])]) == 0
    # The retry queued a pass.
    assert [job.func_name for job in get_queue(DELIVERIES).jobs] == [DELIVER_JOB]
    run_due_jobs()
    delivery = row(reply["id"])
    assert (delivery["status"], delivery["attempts"]) == (DELIVERED, 2)
    assert receiver.ids() == [reply["id"]] * 2


def test_a_pass_queued_by_a_reply_is_woken_by_the_next_one(
    client, delivery_app, fake_clock, receiver, redis_conn
):
    """A stream of replies costs one job, not one each: the pass the first reply queued waits
    a little for more, and the next reply wakes it instead of queueing another."""
    _, _, first = one_reply(client, fake_clock)
    [job] = get_queue(DELIVERIES).jobs
    assert job.kwargs == {"linger": True}
    get_queue(DELIVERIES).empty()  # the worker took it: run it here, in a thread
    results = {}

    def worker():
        with delivery_app.app_context():
            results["pass"] = deliveries.deliver_replies(linger=True)

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        wait_for(lambda: receiver.ids() == [first["id"]], timeout=10)
        _, _, second = one_reply(client, fake_clock)
        assert get_queue(DELIVERIES).count == 0  # woke the pass, queued nothing
        wait_for(lambda: receiver.ids() == [first["id"], second["id"]], timeout=10)
    finally:
        thread.join(timeout=15)
    assert results["pass"]["delivered"] == 2
    # Let go once idle: the next reply queues a pass again.
    assert not redis_conn.exists(queueing.DELIVER_QUEUED_KEY)
    one_reply(client, fake_clock)
    assert get_queue(DELIVERIES).count == 1


def test_all_dead_are_retried_at_once(client, fake_clock, receiver):
    receiver.answer(410, 410)
    dead = [one_reply(client, fake_clock)[2]["id"] for _ in range(2)]
    deliveries.deliver_replies()
    assert [row(i)["status"] for i in dead] == [DEAD, DEAD]
    assert deliveries.retry_deliveries(all_dead=True) == 2
    assert deliveries.deliver_replies()["delivered"] == 2


def test_the_cli_runs_one_pass(delivery_app, client, fake_clock, receiver):
    _, _, reply = one_reply(client, fake_clock)
    result = delivery_app.test_cli_runner().invoke(args=["deliver_replies"])
    assert result.exit_code == 0, result.output
    assert result.output == "delivered 1, retry 0, dead 0\n"
    assert receiver.ids() == [reply["id"]]


def test_replies_of_a_conversation_wait_for_the_one_before(client, fake_clock, receiver):
    receiver.answer(503)
    conversation_id, ids = conversation_with_groups(client, fake_clock, 3)
    fake_clock.advance(1)
    assert deliveries.deliver_replies()["retry"] == 1
    # The head failed: the next ones wait for it, whatever their own due time.
    assert receiver.ids() == ids[:1]
    fake_clock.advance(1)
    assert deliveries.deliver_replies()["delivered"] == 3
    assert receiver.ids() == [ids[0], *ids]


def test_order_per_conversation_under_concurrent_passes(delivery_app, client, fake_clock, receiver):
    conversations = [conversation_with_groups(client, fake_clock, 4) for _ in range(6)]
    receiver.order = dict(conversations)
    # Some failures on the way, so heads are retried while other passes run.
    receiver.answer(503, 200, 500, 200, 200, 502)
    fake_clock.advance(1)
    barrier = threading.Barrier(2)
    errors = []

    def deliver():
        with delivery_app.app_context():
            try:
                barrier.wait(timeout=10)
                for _ in range(10):
                    deliveries.deliver_replies()
                    fake_clock.advance(1)
            except Exception as exc:  # reported below, in the test's thread
                errors.append(exc)

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    fake_clock.advance(60)
    deliveries.deliver_replies()
    for conversation_id, ids in conversations:
        assert [row(i)["status"] for i in ids] == [DELIVERED] * 4
        assert list(dict.fromkeys(receiver.ids(conversation_id))) == ids
    assert receiver.out_of_order == []


def test_a_receiver_down_then_up_gets_everything_in_order(client, fake_clock, receiver):
    port = receiver.server.port
    receiver.server.stop()
    conversations = [conversation_with_groups(client, fake_clock, 3) for _ in range(3)]
    for _ in range(5):
        fake_clock.advance(30)
        assert deliveries.deliver_replies()["delivered"] == 0
    heads = [ids[0] for _, ids in conversations]
    assert {row(i)["last_error"] for i in heads} == {"connection refused"}
    assert {row(i)["attempts"] for i in heads} == {5}
    assert {row(ids[1])["attempts"] for _, ids in conversations} == {0}
    receiver.server.port = port
    receiver.server.start()
    # Back within the backoff cap at most.
    fake_clock.advance(30)
    assert deliveries.deliver_replies()["delivered"] == 9
    for conversation_id, ids in conversations:
        assert receiver.ids(conversation_id) == ids
    assert all(s["verified"] for s in receiver.seen)


def test_a_receiver_down_for_an_hour_gets_everything_in_order(client, fake_clock, receiver):
    """An hour of refused connections on the service's clock, with a pass whenever a retry is
    due: nothing is given up (the window is 24 h), the pauses stay at the backoff cap, and once
    the receiver is back every reply arrives within the cap, in order."""
    port = receiver.server.port
    receiver.server.stop()
    conversations = [conversation_with_groups(client, fake_clock, 2) for _ in range(3)]
    heads = [ids[0] for _, ids in conversations]
    down_until = fake_clock.us + 3600 * 1_000_000
    while fake_clock.us < down_until:
        due = min(to_us(row(i)["next_attempt_at"]) for i in heads)
        # Never more than the cap (30 s) between two attempts of a head.
        assert due - fake_clock.us <= 30 * 1_000_000
        fake_clock.us = max(due, fake_clock.us)
        assert deliveries.deliver_replies()["dead"] == 0
    assert {row(i)["status"] for i in heads} == {PENDING}
    assert min(row(i)["attempts"] for i in heads) > 100
    receiver.server.port = port
    receiver.server.start()
    fake_clock.advance(30)
    assert deliveries.deliver_replies()["delivered"] == 6
    for conversation_id, ids in conversations:
        assert receiver.ids(conversation_id) == ids
    assert receiver.out_of_order == []


def test_a_worker_killed_mid_delivery(make_app, receiver, redis_conn, tmp_path, fake_clock):
    """A real `flask worker --queue deliveries` is SIGKILLed while the receiver holds its
    request: the lease runs out, the next pass sends again with the same webhook-id, and the
    reply is delivered."""
    timeout = 1.0
    app = make_app(**delivery_config(receiver, DELIVERY_TIMEOUT_SECONDS=timeout))
    env = stack_env(conftest.TEST_DATABASE_URL, conftest.TEST_REDIS_URL) | {
        "REPLY_WEBHOOK_URL": receiver.url,
        "REPLY_WEBHOOK_SECRET": SECRET,
        "DELIVERY_TIMEOUT_SECONDS": "30",
    }
    stack = LiveStack(env, logs=tmp_path)
    receiver.answer(receiver.blocked())
    with app.app_context():
        client = app.test_client()
        conversation_id = open_conversation(client)
        send(client, conversation_id)
        # Answered by the close at the frozen clock's time: due now for the worker too.
        post(client, close_conversation(conversation_id), 200)
        [reply] = replies(client, conversation_id)
        assert [job.func_name for job in get_queue(DELIVERIES).jobs] == [DELIVER_JOB]
        try:
            stack.start_delivery_workers(1)
            wait_for(lambda: receiver.seen, timeout=30)
            stack.kill("deliveries-0")
        finally:
            stack.stop()
        receiver.release.set()
        delivery = row(reply["id"])
        assert (delivery["status"], delivery["attempts"]) == (PENDING, 1)
        assert delivery["leased_until"] is not None
        # The lease is still held: a pass leaves the delivery alone.
        assert deliveries.deliver_replies()["delivered"] == 0
        fake_clock.us = to_us(delivery["leased_until"]) + 1
        assert deliveries.deliver_replies()["delivered"] == 1
        delivery = row(reply["id"])
        assert (delivery["status"], delivery["attempts"]) == (DELIVERED, 2)
    assert receiver.ids() == [reply["id"]] * 2


def test_a_blocked_receiver_never_delays_a_flush(make_app, receiver, tmp_path, fake_clock):
    """Real workers, one per queue: while the delivery worker waits on a receiver that does
    not answer, the replies worker still answers a group at once."""
    app = make_app(**delivery_config(receiver))
    env = stack_env(conftest.TEST_DATABASE_URL, conftest.TEST_REDIS_URL) | {
        "REPLY_WEBHOOK_URL": receiver.url,
        "REPLY_WEBHOOK_SECRET": SECRET,
        "DELIVERY_TIMEOUT_SECONDS": "30",
    }
    stack = LiveStack(env, logs=tmp_path)
    receiver.answer(receiver.blocked(timeout=60))
    # Messages stamped a minute ago are past their quiet window for the workers' real clock.
    fake_clock.advance(-60)
    with app.app_context():
        client = app.test_client()
        try:
            stack.start_workers(1)
            stack.start_delivery_workers(1)
            wait_for(lambda: live_workers() and live_workers(DELIVERIES), timeout=30)
            first = open_conversation(client)
            send(client, first)
            post(client, close_conversation(first), 200)
            [first_reply] = replies(client, first)
            wait_for(lambda: receiver.seen, timeout=30)
            second = open_conversation(client)
            send(client, second)
            flush_now([second])
            # Within seconds, while the receiver holds the first delivery for up to a minute
            # (and the worker's request waits up to 30 s for it).
            [second_reply] = wait_for(lambda: replies(client, second), timeout=10)
            assert receiver.delivered == set()
            assert row(first_reply["id"])["status"] == PENDING
            receiver.release.set()
            wait_for(
                lambda: all(
                    row(r["id"])["status"] == DELIVERED for r in (first_reply, second_reply)
                ),
                timeout=30,
            )
        finally:
            receiver.release.set()
            stack.stop()
    assert sorted(receiver.ids()) == sorted([first_reply["id"], second_reply["id"]])


@pytest.fixture
def sqlite_delivery_app(tmp_path, redis_conn, receiver):
    """A delivering app on a fresh SQLite file with the migrations applied."""
    url = f"sqlite:///{tmp_path / 'conversations.db'}"
    app = create_app(conftest.app_config(SQLALCHEMY_DATABASE_URI=url, **delivery_config(receiver)))
    with app.app_context():
        upgrade()
        yield app
        db.session.remove()
        db.engine.dispose()


def test_delivery_on_sqlite(sqlite_delivery_app, fake_clock, receiver):
    client = sqlite_delivery_app.test_client()
    receiver.answer(503)
    conversation_id, ids = conversation_with_groups(client, fake_clock, 2)
    fake_clock.advance(1)
    run_due_jobs()
    assert receiver.ids() == ids[:1]
    fake_clock.advance(1)
    assert deliveries.deliver_replies()["delivered"] == 2
    assert receiver.ids() == [ids[0], *ids]
    assert all(s["verified"] for s in receiver.seen)
    assert [row(i)["status"] for i in ids] == [DELIVERED, DELIVERED]
