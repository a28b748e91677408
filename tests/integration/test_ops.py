"""Operator endpoints and options: health, readiness, metrics, live stream, signatures."""

import json
import time
from urllib.parse import urlsplit, urlunsplit

import pytest
from redis.connection import parse_url
from rq import Worker

from service.api.signatures import sign
from service.extensions import redis_client
from service.infra.notices import channel, publish
from service.infra.queueing import SCHEDULER_HEARTBEAT_KEY, get_queue
from tests.conftest import TEST_REDIS_URL
from tests.helpers import (
    new_conversation,
    new_id,
    new_message,
    open_conversation,
    post,
    run_due_jobs,
    wait_for,
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


def gauge(body, name):
    (line,) = [line for line in body.splitlines() if line.startswith(name + " ")]
    return float(line.split()[1])


def test_metrics_show_the_backlog_of_due_groups(client, fake_clock):
    """An operator sees replies falling behind: groups past their debounce window without a
    reply, and how long the oldest has waited since it came due (issue 14)."""
    first, second = open_conversation(client), open_conversation(client)
    post(client, new_message(new_id(), first), 202)
    fake_clock.advance(3)
    post(client, new_message(new_id(), second), 202)
    fake_clock.advance(2.5)  # first due 0.5 s ago, second still in its window
    body = client.get("/metrics").get_data(as_text=True)
    assert gauge(body, "due_groups") == 1
    assert gauge(body, "oldest_due_group_age_seconds") == pytest.approx(0.5, abs=0.01)
    post(client, new_message(new_id(), first), 202)  # a second group, not due yet
    fake_clock.advance(4)
    body = client.get("/metrics").get_data(as_text=True)
    assert gauge(body, "due_groups") == 2  # first's first group, second's only one
    assert gauge(body, "oldest_due_group_age_seconds") == pytest.approx(4.5, abs=0.01)
    run_due_jobs()
    body = client.get("/metrics").get_data(as_text=True)
    assert gauge(body, "due_groups") == 0
    assert gauge(body, "oldest_due_group_age_seconds") == 0


def test_metrics_label_unknown_methods_as_other(client):
    """A method label per request's whim would let anyone grow /metrics without bound."""
    for method in ("FOOBAR", "QWERTYUIOP", "get"):
        client.open("/healthz", method=method)
    body = client.get("/metrics").get_data(as_text=True)
    assert 'method="other"' in body
    assert "FOOBAR" not in body and "QWERTYUIOP" not in body


def test_metrics_with_redis_stopped_is_503(make_app):
    app = make_app(REDIS_URL="redis://127.0.0.1:1/0")
    with app.app_context():
        assert app.test_client().get("/metrics").status_code == 503


def open_stream(app):
    """GET /events/stream of `app`, returned once Redis counts its subscription (so nothing
    published afterwards can miss it), with the chunks it yields as text."""
    with app.app_context():
        live = channel()
        before = subscribers(live)
        response = app.test_client().get("/events/stream", buffered=False)
        assert response.mimetype == "text/event-stream"
        wait_for(lambda: subscribers(live) > before, timeout=5)
    chunks = (c.decode() if isinstance(c, bytes) else c for c in response.response)
    return response, chunks


def subscribers(name):
    """How many connections of the whole Redis server listen on the channel `name`."""
    return redis_client.client.pubsub_numsub(name)[0][1]


def read_until(chunks, found, timeout=10):
    """The events ({"event": ..., **data}) of a stream up to the first for which `found`
    holds, read for at most about `timeout` seconds (the stream pings every 5 s)."""
    deadline, text, events = time.monotonic() + timeout, "", []
    while time.monotonic() < deadline:
        text += next(chunks)
        *blocks, text = text.split("\n\n")
        for block in blocks:
            data = [line[6:] for line in block.splitlines() if line.startswith("data: ")]
            if data:
                events.append(json.loads("\n".join(data)))
                if found(events[-1]):
                    return events
    raise AssertionError(f"not received within {timeout}s; got {events}")


def publish_from(app, event, **payload):
    with app.app_context():
        publish(redis_client.client, event, **payload)


def other_redis_index(url):
    """The same Redis server as `url`, one database index up. Nothing is stored there by
    the tests that use it: they only publish and subscribe, which no index holds."""
    index = int(parse_url(url).get("db") or 0)
    return urlunsplit(urlsplit(url)._replace(path=f"/{(index + 1) % 16}"))


def test_live_stream_delivers_published_events(app, client, redis_conn):
    """Events of other copies of the service on the same channel (another run on this Redis
    database) may come first: only this test's own event counts."""
    response, chunks = open_stream(app)
    assert "connected" in next(chunks)
    conversation_id = new_id()
    publish(redis_conn, "conversation.created", conversation_id=conversation_id)
    events = read_until(chunks, lambda e: e.get("conversation_id") == conversation_id)
    assert events[-1]["event"] == "conversation.created"
    live = channel()
    subscribed = subscribers(live)
    response.close()
    assert subscribers(live) == subscribed - 1


def test_live_events_stay_in_their_redis_database(make_app, redis_conn):
    """Two deployments on one Redis server, different database indexes: pub/sub channels
    ignore the index, so each must publish on a channel of its own.

    Redis runs commands one at a time, so an event published before the one a stream waits
    for would have reached that stream first, were the channel shared. The other deployment
    is a real one's index: it only publishes `test.marker`, an event no console listens to.
    """
    ours = make_app()
    theirs = make_app(REDIS_URL=other_redis_index(TEST_REDIS_URL))
    our_stream, our_chunks = open_stream(ours)
    their_stream, their_chunks = open_stream(theirs)
    before, mine, after = new_id(), new_id(), new_id()
    publish_from(theirs, "test.marker", conversation_id=before)
    publish_from(ours, "conversation.created", conversation_id=mine)
    publish_from(theirs, "test.marker", conversation_id=after)

    seen = read_until(our_chunks, lambda e: e.get("conversation_id") == mine)
    assert before not in [e.get("conversation_id") for e in seen]
    seen = read_until(their_chunks, lambda e: e.get("conversation_id") == after)
    assert mine not in [e.get("conversation_id") for e in seen]
    our_stream.close()
    their_stream.close()


def test_live_channel_setting_names_the_channel(make_app, redis_conn):
    """LIVE_CHANNEL overrides the name derived from the index: deployments given the same
    one share their events, whatever their indexes."""
    shared = f"conversations:live:test-{new_id()}"
    ours = make_app(LIVE_CHANNEL=shared)
    theirs = make_app(REDIS_URL=other_redis_index(TEST_REDIS_URL), LIVE_CHANNEL=shared)
    response, chunks = open_stream(ours)
    assert redis_conn.pubsub_numsub(shared)[0][1] == 1
    conversation_id = new_id()
    publish_from(theirs, "conversation.created", conversation_id=conversation_id)
    read_until(chunks, lambda e: e.get("conversation_id") == conversation_id)
    response.close()


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
