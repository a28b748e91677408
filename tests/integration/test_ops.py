"""Operator endpoints and options: health, readiness, metrics, live stream, signatures."""

import json
import threading

import pytest
from rq import Worker

from service.api.signatures import sign
from service.infra.notices import CHANNEL, publish
from service.infra.queueing import SCHEDULER_HEARTBEAT_KEY, get_queue
from tests.helpers import (
    new_conversation,
    new_id,
    new_message,
    open_conversation,
    post,
    run_due_jobs,
)


@pytest.fixture
def worker_and_scheduler(app, redis_conn):
    """A registered worker and a scheduler heartbeat, as running processes leave them."""
    worker = Worker([get_queue()], connection=redis_conn)
    worker.register_birth()
    redis_conn.set(SCHEDULER_HEARTBEAT_KEY, "test", ex=30)
    yield
    worker.register_death()


def test_healthz_needs_no_dependency(make_app):
    app = make_app(SQLALCHEMY_DATABASE_URI="postgresql://postgres@127.0.0.1:1/x")
    assert app.test_client().get("/healthz").status_code == 200


def test_readyz_ready_with_worker_and_scheduler(client, worker_and_scheduler):
    response = client.get("/readyz")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["status"] == "ready"


def test_readyz_without_worker_is_503(client, redis_conn):
    redis_conn.set(SCHEDULER_HEARTBEAT_KEY, "test", ex=30)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"]["workers"]["ok"] is False
    assert response.headers["Retry-After"]


@pytest.mark.parametrize(
    "override, failing",
    [
        (
            {"SQLALCHEMY_DATABASE_URI": "postgresql+psycopg2://postgres@127.0.0.1:1/test"},
            "database",
        ),
        ({"REDIS_URL": "redis://127.0.0.1:1/0"}, "redis"),
    ],
)
def test_readyz_with_a_dependency_stopped_is_503(make_app, override, failing):
    app = make_app(**override)
    with app.app_context():
        response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"][failing]["ok"] is False


def test_metrics_count_events_and_replies(client, fake_clock):
    conversation_id = open_conversation(client)
    post(client, new_message(new_id(), conversation_id), 202)
    post(client, new_message(new_id(), new_id()), 202)
    fake_clock.advance(5)
    run_due_jobs()
    body = client.get("/metrics").get_data(as_text=True)
    assert 'webhook_events_total{outcome="ok",type="NEW_MESSAGE"}' in body
    assert "pipeline_replies_quiet_total 1.0" in body
    assert "pipeline_hold_message_total 1.0" in body
    assert "held_messages_waiting 1.0" in body
    assert "reply_lateness_seconds_count 1.0" in body
    assert "http_request_duration_seconds_bucket" in body


def test_metrics_with_redis_stopped_is_503(make_app):
    app = make_app(REDIS_URL="redis://127.0.0.1:1/0")
    with app.app_context():
        assert app.test_client().get("/metrics").status_code == 503


def test_live_stream_delivers_published_events(app, client, redis_conn):
    response = client.get("/events/stream", buffered=False)
    assert response.mimetype == "text/event-stream"
    chunks = (c.decode() if isinstance(c, bytes) else c for c in response.response)
    assert "connected" in next(chunks)
    conversation_id = new_id()
    timer = threading.Timer(
        0.2,
        publish,
        args=(redis_conn, "conversation.created"),
        kwargs={"conversation_id": conversation_id},
    )
    timer.start()
    received = ""
    while "conversation.created" not in received:
        received += next(chunks)
    assert conversation_id in received
    response.close()
    assert redis_conn.pubsub_numsub(CHANNEL)[0][1] == 0


def test_live_stream_slots_are_bounded(make_app):
    app = make_app(STREAM_SLOTS=1)
    with app.app_context():
        client = app.test_client()
        first = client.get("/events/stream", buffered=False)
        second = client.get("/events/stream")
        assert second.status_code == 503
        first.close()


def test_signature_required_when_secret_set(make_app):
    app = make_app(WEBHOOK_SECRETS=["old-secret", "new-secret"])
    client = app.test_client()
    headers = {"Content-Type": "application/json"}
    body = json.dumps(new_conversation(new_id())).encode()
    assert client.post("/webhook/", data=body, headers=headers).status_code == 401
    bad = {**headers, "X-Hub-Signature-256": sign("wrong", body)}
    response = client.post("/webhook/", data=body, headers=bad)
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_signature"
    for secret in ("old-secret", "new-secret"):
        raw = json.dumps(new_conversation(new_id())).encode()
        signed = {**headers, "X-Hub-Signature-256": sign(secret, raw)}
        assert client.post("/webhook/", data=raw, headers=signed).status_code == 201
