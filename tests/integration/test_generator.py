"""Replies from the team's bot (issue 13, REPLY_GENERATOR_URL) on real PostgreSQL, Redis and RQ,
with a real HTTP generator (pytest-httpserver, threaded) and the clock under control."""

import json
import socketserver
import subprocess
import sys
import threading
import time
import uuid
from collections import deque

import pytest
import requests
from flask_migrate import upgrade
from sqlalchemy import select

from werkzeug import Response

from service import create_app
from service.domain.clock import to_us
from service.domain.generation import FAILED, PENDING, STORED
from service.domain.rules import reply_content
from service.extensions import db
from service.infra import metrics
from service.infra.models import Delivery, Generation, Message
from service.infra.queueing import (
    GENERATE_JOB,
    GENERATIONS,
    get_queue,
    periodic_jobs,
    queue_name,
)
from service.pipeline import generations
from service.pipeline import replies as reply_pipeline
from service.pipeline.queries import gauges
from tests import conftest
from tests.helpers import (
    close_conversation,
    http_peer,
    new_message,
    open_conversation,
    post,
    replies,
    row_of,
    run_due_jobs,
    send,
    wait_for,
)
from tests.stack import LiveStack, stack_env

NOTHING = {"generated": 0, "retry": 0, "template": 0, "failed": 0}


class Bot:
    """The team's bot: records each request and answers as told (`script`: answers in order,
    then `default`). An answer is a status, a (status, body) pair, or a callable run first (to
    block) that returns one of them. By default it answers 200 with a content naming the
    group's messages."""

    def __init__(self, server):
        self.server = server
        self.lock = threading.Lock()
        self.seen = []
        self.script = deque()
        self.default = None
        self.release = threading.Event()
        server.expect_request("/generate", method="POST").respond_with_handler(self.handle)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.port}/generate"

    def answer(self, *answers):
        with self.lock:
            self.script.extend(answers)

    def blocked(self, timeout=30):
        """An answer that waits until the test releases it (or `timeout`), then answers."""

        def wait():
            self.release.wait(timeout)
            return None

        return wait

    @staticmethod
    def content_for(payload):
        return "Bot: " + ", ".join(m["content"] for m in payload["messages"])

    def handle(self, request):
        payload = json.loads(request.get_data())
        with self.lock:
            self.seen.append({"headers": dict(request.headers), "payload": payload})
            answer = self.script.popleft() if self.script else self.default
        if callable(answer):
            answer = answer()
        if answer is None:
            answer = (200, {"content": self.content_for(payload)})
        status, body = answer if isinstance(answer, tuple) else (answer, {})
        text = body if isinstance(body, str) else json.dumps(body)
        return Response(text, status=status, content_type="application/json")

    def keys(self):
        """The Idempotency-Key of each request, in arrival order."""
        with self.lock:
            return [s["headers"].get("Idempotency-Key") for s in self.seen]


@pytest.fixture
def bot():
    with http_peer(Bot) as bot:
        yield bot


def generator_config(bot, **overrides):
    return {
        "REPLY_GENERATOR_URL": bot.url,
        "REPLY_GENERATOR_TOKEN": "bot-token",
        "REPLY_GENERATOR_TIMEOUT_SECONDS": 2.0,
        "REPLY_GENERATOR_ATTEMPTS": 3,
        "REPLY_GENERATOR_MAX_BACKOFF_SECONDS": 5.0,
        "REPLY_GENERATOR_FALLBACK": "template",
        **overrides,
    }


@pytest.fixture
def generator_app(make_app, bot):
    app = make_app(**generator_config(bot))
    with app.app_context():
        yield app


@pytest.fixture
def client(generator_app):
    return generator_app.test_client()


def row(reply_id):
    """The generation of a reply id, as a dict (None when there is none)."""
    return row_of(Generation, reply_id)


def closed_group(client, fake_clock, *contents):
    """A conversation whose one group (a message per content) was closed by its flush.
    Returns (conversation_id, message ids, the generation row)."""
    conversation_id = open_conversation(client)
    ids = []
    for text in contents:
        ids.append(send_text(client, conversation_id, text))
        fake_clock.advance(0.1)
    fake_clock.advance(5)
    assert reply_pipeline.flush_group(conversation_id) == "answered"
    [generation] = rows_of(conversation_id)
    return conversation_id, ids, generation


def send_text(client, conversation_id, text):
    """POST a NEW_MESSAGE with this content that must be accepted; return its id."""
    message_id = str(uuid.uuid4())
    post(client, new_message(message_id, conversation_id, content=text), 202)
    return message_id


def rows_of(conversation_id):
    found = db.session.execute(
        select(Generation.__table__)
        .where(Generation.conversation_id == uuid.UUID(conversation_id))
        .order_by(Generation.created_at)
    ).all()
    db.session.rollback()
    return [dict(r._mapping) for r in found]


def advance_to_next_attempt(fake_clock, reply_id):
    fake_clock.us = to_us(row(reply_id)["next_attempt_at"])


def test_the_bot_writes_the_reply(client, fake_clock, bot, redis_conn):
    conversation_id = open_conversation(client)
    first = send_text(client, conversation_id, "Oi")
    fake_clock.advance(1)
    second = send_text(client, conversation_id, "Tudo bem?")
    fake_clock.advance(5)
    # The flush closes the group and queues a generation pass on its own queue; the worker
    # of the test runs both.
    run_due_jobs()
    [reply] = replies(client, conversation_id)
    assert reply["content"] == "Bot: Oi, Tudo bem?"

    [seen] = bot.seen
    assert seen["headers"]["Idempotency-Key"] == reply["id"]
    assert seen["headers"]["Authorization"] == "Bearer bot-token"
    payload = seen["payload"]
    assert payload["type"] == "group.closed"
    assert (payload["conversation_id"], payload["reply_id"]) == (conversation_id, reply["id"])
    assert [(m["id"], m["content"]) for m in payload["messages"]] == [
        (first, "Oi"),
        (second, "Tudo bem?"),
    ]
    assert payload["messages"][0]["timestamp"] == "2025-06-04T14:20:05Z"

    generation = row(reply["id"])
    assert (generation["status"], generation["source"], generation["attempts"]) == (
        STORED,
        "generator",
        1,
    )
    assert generation["leased_until"] is None and generation["last_error"] is None
    linked = db.session.execute(
        select(Message.reply_id).where(Message.id.in_([uuid.UUID(first), uuid.UUID(second)]))
    ).scalars()
    assert set(linked) == {uuid.UUID(reply["id"])}
    db.session.rollback()
    # Asked once: another pass asks nothing.
    assert generations.generate_replies() == NOTHING
    assert len(bot.seen) == 1

    text = metrics.render(redis_conn, dict)[0].decode()
    assert 'generations_total{outcome="generated"} 1.0' in text
    assert 'generation_attempts_total{outcome="generated"} 1.0' in text
    assert "generation_latency_seconds_count 1.0" in text
    assert "pipeline_replies_quiet_total 1.0" in text


def test_the_generator_is_off_by_default(make_app, fake_clock, bot):
    app = make_app()
    with app.app_context():
        client = app.test_client()
        conversation_id = open_conversation(client)
        ids = [send(client, conversation_id)]
        fake_clock.advance(5)
        assert reply_pipeline.flush_group(conversation_id) == "answered"
        [reply] = replies(client, conversation_id)
        assert reply["content"] == reply_content(ids)
        assert rows_of(conversation_id) == []
        assert get_queue(GENERATIONS).jobs == []
        assert "generate_replies" not in periodic_jobs()
        assert generations.generate_replies() == NOTHING
        assert app.test_cli_runner().invoke(args=["generate_replies"]).exit_code == 1
    assert bot.seen == []


def test_the_periodic_pass_is_on_its_own_queue(generator_app):
    assert periodic_jobs()["generate_replies"] == (GENERATE_JOB, 1, queue_name(GENERATIONS))
    assert queue_name(GENERATIONS) not in (queue_name(), queue_name("deliveries"))


def test_a_timeout_is_retried_then_the_template_answers(make_app, fake_clock, bot):
    app = make_app(**generator_config(bot, REPLY_GENERATOR_TIMEOUT_SECONDS=0.3))
    slow = bot.blocked(timeout=1.5)
    bot.answer(slow, slow, slow)
    with app.app_context():
        client = app.test_client()
        conversation_id, ids, generation = closed_group(client, fake_clock, "Oi")
        reply_id = generation["reply_id"]
        assert generations.generate_replies() == {**NOTHING, "retry": 1}
        found = row(reply_id)
        assert (found["status"], found["last_error"]) == (PENDING, "timeout after 0.3 s")
        # Full jitter: due within the first backoff (1 s).
        assert 0 <= to_us(found["next_attempt_at"]) - fake_clock.us <= 1_000_000
        assert replies(client, conversation_id) == []
        advance_to_next_attempt(fake_clock, reply_id)
        assert generations.generate_replies() == {**NOTHING, "retry": 1}
        advance_to_next_attempt(fake_clock, reply_id)
        assert generations.generate_replies() == {**NOTHING, "template": 1}
        [reply] = replies(client, conversation_id)
        assert reply["content"] == reply_content(ids)
        found = row(reply_id)
        assert (found["status"], found["source"], found["attempts"]) == (STORED, "template", 3)
        assert found["last_error"] == "gave up after 3 attempts: timeout after 0.3 s"
    assert bot.keys() == [str(reply_id)] * 3


def test_a_5xx_is_retried_and_the_next_answer_counts(client, fake_clock, bot):
    bot.answer(503, (500, "oops"))
    conversation_id, _, generation = closed_group(client, fake_clock, "Oi")
    reply_id = generation["reply_id"]
    assert generations.generate_replies()["retry"] == 1
    assert row(reply_id)["last_status"] == 503
    fake_clock.advance(0.5)
    assert gauges()["generation_pending"][1] == 1
    assert gauges()["generation_oldest_pending_age_seconds"][1] == 0.5
    advance_to_next_attempt(fake_clock, reply_id)
    assert generations.generate_replies()["retry"] == 1
    advance_to_next_attempt(fake_clock, reply_id)
    assert generations.generate_replies()["generated"] == 1
    [reply] = replies(client, conversation_id)
    assert reply["content"] == "Bot: Oi"
    assert bot.keys() == [str(reply_id)] * 3


@pytest.mark.parametrize(
    "answer",
    [
        400,
        (200, {"content": ""}),
        (200, "not json"),
        (200, {"text": "hi"}),
        (200, {"content": "abc\u0000def"}),
        (200, '{"content": "abc\\ud800def"}'),
    ],
    ids=["400", "empty content", "not JSON", "no content", "NUL", "lone surrogate"],
)
def test_a_refusal_or_a_bad_answer_is_not_retried(client, fake_clock, bot, answer):
    bot.answer(answer)
    conversation_id, ids, _ = closed_group(client, fake_clock, "Oi")
    assert generations.generate_replies()["template"] == 1
    [reply] = replies(client, conversation_id)
    assert reply["content"] == reply_content(ids)
    assert len(bot.seen) == 1


def test_with_fallback_fail_an_operator_retries_the_failed_group(make_app, fake_clock, bot):
    app = make_app(**generator_config(bot, REPLY_GENERATOR_FALLBACK="fail"))
    bot.answer(400)
    with app.app_context():
        client = app.test_client()
        conversation_id, ids, generation = closed_group(client, fake_clock, "Oi")
        reply_id = generation["reply_id"]
        assert generations.generate_replies() == {**NOTHING, "failed": 1}
        found = row(reply_id)
        assert (found["status"], found["last_error"]) == (FAILED, "HTTP 400: not retried")
        assert replies(client, conversation_id) == []
        # The failed group stays closed: nothing regroups or re-arms its messages...
        fake_clock.advance(60)
        assert reply_pipeline.reconcile_groups() == []
        # ...and it does not hold up the next group of its conversation.
        later = send_text(client, conversation_id, "Alguém?")
        fake_clock.advance(5)
        assert reply_pipeline.flush_group(conversation_id) == "answered"
        assert generations.generate_replies()["generated"] == 1
        [answered] = replies(client, conversation_id)
        assert answered["content"] == "Bot: Alguém?"
        assert bot.seen[-1]["payload"]["messages"][0]["id"] == later

        runner = app.test_cli_runner()
        listed = runner.invoke(args=["generations", "list", "--status", "failed"])
        assert listed.exit_code == 0 and str(reply_id) in listed.output
        retried = runner.invoke(args=["generations", "retry", str(reply_id)])
        assert retried.exit_code == 0, retried.output
        assert "retried 1 failed group" in retried.output
        assert [job.func_name for job in get_queue(GENERATIONS).jobs][-1] == GENERATE_JOB
        assert generations.generate_replies()["generated"] == 1
        assert row(reply_id)["status"] == STORED
        # Written last, it still reads in its group's place.
        contents = [r["content"] for r in replies(client, conversation_id)]
        assert contents == ["Bot: Oi", "Bot: Alguém?"]
        again = runner.invoke(args=["generations", "retry", str(reply_id)])
        assert again.exit_code == 1 and "not failed groups" in again.output
    assert ids == [m["id"] for m in bot.seen[0]["payload"]["messages"]]


def test_a_slow_bot_while_new_messages_arrive(generator_app, client, fake_clock, bot):
    """The bot holds the first group's call. Meanwhile the conversation's next messages form
    the next group, closed by its flush at once (no lock is held during the call), whose call
    waits for the first reply: replies are stored in group order."""
    bot.answer(bot.blocked())
    conversation_id, first_ids, first = closed_group(client, fake_clock, "Oi")
    outcome = {}

    def first_pass():
        with generator_app.app_context():
            outcome["first"] = generations.generate_replies()

    passing = threading.Thread(target=first_pass)
    passing.start()
    wait_for(lambda: bot.seen)
    later = []
    for text in ("Preciso de ajuda", "Urgente"):
        later.append(send_text(client, conversation_id, text))
        fake_clock.advance(0.1)
    fake_clock.advance(5)
    assert reply_pipeline.flush_group(conversation_id) == "answered"
    [_, second] = rows_of(conversation_id)
    assert second["status"] == PENDING
    # The second group waits for the first one's reply.
    assert generations.generate_replies() == NOTHING
    assert len(bot.seen) == 1
    bot.release.set()
    passing.join(timeout=30)
    # The pass goes on with the group its reply freed.
    assert outcome["first"]["generated"] + generations.generate_replies()["generated"] == 2
    contents = [r["content"] for r in replies(client, conversation_id)]
    assert contents == ["Bot: Oi", "Bot: Preciso de ajuda, Urgente"]
    assert [m["id"] for m in bot.seen[1]["payload"]["messages"]] == later
    assert bot.keys() == [str(first["reply_id"]), str(second["reply_id"])]
    assert first_ids == [m["id"] for m in bot.seen[0]["payload"]["messages"]]


def test_a_close_closes_the_open_group_for_the_bot(client, fake_clock, bot):
    conversation_id = open_conversation(client)
    send_text(client, conversation_id, "Tchau")
    post(client, close_conversation(conversation_id), 200)
    run_due_jobs()
    [reply] = replies(client, conversation_id)
    assert reply["content"] == "Bot: Tchau"


def test_a_generated_reply_is_delivered(make_app, fake_clock, bot):
    """With delivery on too, the reply's outbox row is written with it, not at the closure."""
    from tests.integration.test_delivery import SECRET

    app = make_app(
        **generator_config(bot), REPLY_WEBHOOK_URL=bot.url, REPLY_WEBHOOK_SECRETS=[SECRET]
    )
    with app.app_context():
        client = app.test_client()
        conversation_id, _, generation = closed_group(client, fake_clock, "Oi")
        assert db.session.execute(select(Delivery)).first() is None
        db.session.rollback()
        generations.generate_replies()
        [reply] = replies(client, conversation_id)
        delivery = db.session.get(Delivery, uuid.UUID(reply["id"]))
        assert delivery is not None and delivery.status == "pending"
        db.session.rollback()


def test_a_worker_killed_mid_generation(make_app, bot, tmp_path, fake_clock):
    """A real `flask worker --queue generations` is SIGKILLed while the bot holds its call: the
    lease runs out, the next pass asks again with the same idempotency key, and exactly one
    reply is stored."""
    app = make_app(**generator_config(bot, REPLY_GENERATOR_TIMEOUT_SECONDS=1.0))
    env = stack_env(conftest.TEST_DATABASE_URL, conftest.TEST_REDIS_URL) | {
        "REPLY_GENERATOR_URL": bot.url,
        "REPLY_GENERATOR_TIMEOUT_SECONDS": "30",
    }
    stack = LiveStack(env, logs=tmp_path)
    bot.answer(bot.blocked())
    with app.app_context():
        client = app.test_client()
        conversation_id = open_conversation(client)
        send_text(client, conversation_id, "Oi")
        # Closed by the close at the frozen clock's time: due now for the worker too.
        post(client, close_conversation(conversation_id), 200)
        [generation] = rows_of(conversation_id)
        assert [job.func_name for job in get_queue(GENERATIONS).jobs] == [GENERATE_JOB]
        try:
            stack.start_generation_workers(1)
            wait_for(lambda: bot.seen, timeout=30)
            stack.kill("generations-0")
        finally:
            stack.stop()
        bot.release.set()
        found = row(generation["reply_id"])
        assert (found["status"], found["attempts"]) == (PENDING, 1)
        # The lease is still held: a pass leaves the group alone.
        assert generations.generate_replies() == NOTHING
        fake_clock.us = to_us(found["leased_until"]) + 1
        assert generations.generate_replies()["generated"] == 1
        [reply] = replies(client, conversation_id)
        assert reply["content"] == "Bot: Oi"
    assert bot.keys() == [str(generation["reply_id"])] * 2


def test_the_generator_on_sqlite(redis_conn, tmp_path, fake_clock, bot):
    url = f"sqlite:///{tmp_path / 'conversations.db'}"
    app = create_app(conftest.app_config(SQLALCHEMY_DATABASE_URI=url, **generator_config(bot)))
    with app.app_context():
        upgrade()
        client = app.test_client()
        conversation_id, _, _ = closed_group(client, fake_clock, "Oi")
        assert generations.generate_replies()["generated"] == 1
        [reply] = replies(client, conversation_id)
        assert reply["content"] == "Bot: Oi"
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def reference_bot():
    """scripts/bot.py as a real process on a free port; yields its URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "scripts.bot", "--port", "0", "--json"],
        cwd=conftest.ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        listening = json.loads(process.stdout.readline())
        assert listening["event"] == "listening"
        yield listening["url"]
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
        process.stdout.close()


def test_the_reference_bot_answers_and_honours_the_idempotency_key(
    make_app, fake_clock, reference_bot
):
    app = make_app(REPLY_GENERATOR_URL=reference_bot, REPLY_GENERATOR_TIMEOUT_SECONDS=5.0)
    with app.app_context():
        client = app.test_client()
        conversation_id, _, generation = closed_group(client, fake_clock, "Oi", "Tudo bem?")
        assert generations.generate_replies()["generated"] == 1
        [reply] = replies(client, conversation_id)
        assert reply["content"] == "Olá! Recebemos 2 mensagem(ns): Oi / Tudo bem?"
    # A repeat of the call (a lost answer) gets the first answer again.
    again = requests.post(
        reference_bot,
        json={"messages": [{"content": "something else"}]},
        headers={"Idempotency-Key": str(generation["reply_id"])},
        timeout=5,
    )
    assert again.json() == {"content": reply["content"]}


def test_the_api_lists_shows_and_retries_failed_groups(make_app, fake_clock, bot):
    app = make_app(
        **generator_config(bot, REPLY_GENERATOR_FALLBACK="fail"), API_TOKENS=["read-token"]
    )
    auth = {"Authorization": "Bearer read-token"}
    bot.answer(400, 400)
    with app.app_context():
        client = app.test_client()
        conversation_id, ids, first = closed_group(client, fake_clock, "Oi")
        _, _, second = closed_group(client, fake_clock, "Olá")
        assert generations.generate_replies()["failed"] == 2
        assert client.get("/generations/").status_code == 401

        page = client.get("/generations/?status=failed&limit=1", headers=auth).get_json()
        [newest] = page["items"]
        assert newest["reply_id"] == str(second["reply_id"])
        assert (newest["status"], newest["source"], newest["attempts"]) == ("failed", None, 1)
        assert newest["last_error"] == "HTTP 400: not retried"
        rest = client.get(
            f"/generations/?status=failed&limit=1&cursor={page['next_cursor']}", headers=auth
        ).get_json()
        assert [g["reply_id"] for g in rest["items"]] == [str(first["reply_id"])]
        assert rest["next_cursor"] is None

        shown = client.get(f"/generations/{first['reply_id']}/", headers=auth).get_json()
        assert shown["message_ids"] == ids
        retried = client.post(f"/generations/{first['reply_id']}/retry", headers=auth)
        assert retried.status_code == 200
        assert retried.get_json()["status"] == "pending"
        again = client.post(f"/generations/{first['reply_id']}/retry", headers=auth)
        assert again.status_code == 409 and again.get_json()["error"] == "not_failed"
        unknown = client.post(f"/generations/{uuid.uuid4()}/retry", headers=auth)
        assert unknown.status_code == 404
        assert unknown.get_json()["error"] == "generation_not_found"
        everything = client.post("/generations/retry", json={"all_failed": True}, headers=auth)
        assert everything.get_json() == {"retried": 1}
        refused = client.post("/generations/retry", json={"all_failed": "yes"}, headers=auth)
        assert refused.status_code == 400

        assert generations.generate_replies()["generated"] == 2
        shown = client.get(f"/conversations/{conversation_id}/", headers=auth).get_json()
        assert [m["content"] for m in shown["messages"]] == ["Oi", "Bot: Oi"]


class Dribbler:
    """A bot that answers a byte at a time, `pause` seconds apart: its status line and
    headers (`headers_too`) or only its body. Each byte comes within any read timeout longer
    than `pause`, so only a bound on the whole call stops it."""

    def __init__(self, pause, headers_too):
        self.pause, self.headers_too = pause, headers_too
        self.stop = threading.Event()
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"

    def _handler(self):
        dribbler = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                self.request.recv(65536)
                body = b'{"content": "' + b"x" * 200 + b'"}'
                head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                head += b"Content-Length: %d\r\n\r\n" % len(body)
                slow = head + body if dribbler.headers_too else body
                try:
                    if not dribbler.headers_too:
                        self.request.sendall(head)
                    for byte in slow:
                        if dribbler.stop.wait(dribbler.pause):
                            return
                        self.request.sendall(bytes([byte]))
                except OSError:
                    return

        return Handler

    def close(self):
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("headers_too", [False, True], ids=["body", "headers"])
def test_a_bot_answering_a_byte_at_a_time_is_cut_off(make_app, fake_clock, headers_too):
    """The read timeout bounds each wait only; a pass still ends within about twice the
    timeout, and the group is asked again later instead of holding the worker."""
    dribbler = Dribbler(pause=0.2, headers_too=headers_too)
    app = make_app(REPLY_GENERATOR_URL=dribbler.url, REPLY_GENERATOR_TIMEOUT_SECONDS=0.5)
    try:
        with app.app_context():
            client = app.test_client()
            _, _, generation = closed_group(client, fake_clock, "Oi")
            started = time.monotonic()
            totals = generations.generate_replies()
            assert time.monotonic() - started < 2 * 0.5 + 1 + 1
            found = row(generation["reply_id"])
            assert found["status"] == PENDING
            if headers_too:
                # Abandoned: its lease runs out, then it is asked again.
                assert totals == NOTHING
                assert found["leased_until"] is not None
            else:
                assert totals == {**NOTHING, "retry": 1}
                assert found["last_error"] == "timeout after 0.5 s"
    finally:
        dribbler.close()
