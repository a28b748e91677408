"""PostgreSQL or Redis down: 503 with Retry-After, nothing half-done, never a 500."""

import threading

import pytest
import redis.exceptions
from sqlalchemy import func, select, text

from service import create_app
from service.extensions import db
from service.infra.models import Conversation, HeldMessage, Message
from service.pipeline import groups
from tests import conftest
from tests.helpers import (
    close_conversation,
    messages,
    new_conversation,
    new_id,
    new_message,
    open_conversation,
)

UNREACHABLE_DATABASE = "postgresql+psycopg2://postgres@127.0.0.1:1/test"
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"


def assert_unavailable(response):
    assert response.status_code == 503, response.get_json()
    assert int(response.headers["Retry-After"]) > 0
    body = response.get_json()
    assert body["code"] == 503
    assert body["status"] == "Service Unavailable"
    assert body["error"] == "service_unavailable"
    assert body["message"]


@pytest.fixture
def app_without_database(redis_conn):
    """An app whose PostgreSQL is unreachable."""
    app = create_app(conftest.app_config(SQLALCHEMY_DATABASE_URI=UNREACHABLE_DATABASE))
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def app_without_redis(app):
    """An app on the test database whose Redis is unreachable."""
    broken = create_app(conftest.app_config(REDIS_URL=UNREACHABLE_REDIS))
    yield broken
    with broken.app_context():
        db.session.remove()
        db.engine.dispose()


def counts():
    """Row counts read through the working app's real database connection."""
    db.session.rollback()
    return tuple(
        db.session.execute(select(func.count()).select_from(model)).scalar_one()
        for model in (Conversation, Message, HeldMessage)
    )


@pytest.mark.parametrize(
    "event",
    [
        new_conversation(new_id()),
        new_message(new_id(), new_id()),
        close_conversation(new_id()),
    ],
    ids=["NEW_CONVERSATION", "NEW_MESSAGE", "CLOSE_CONVERSATION"],
)
def test_webhook_without_database_is_503(app_without_database, event):
    assert_unavailable(app_without_database.test_client().post("/webhook/", json=event))


@pytest.mark.parametrize(
    "url",
    ["/conversations/{id}/", "/conversations/{id}", "/conversations/", "/held/"],
)
def test_reads_without_database_are_503(app_without_database, url):
    assert_unavailable(app_without_database.test_client().get(url.format(id=new_id())))


def test_invalid_event_without_database_is_still_400(app_without_database):
    response = app_without_database.test_client().post("/webhook/", json={"type": "X"})
    assert response.status_code == 400


def test_message_without_redis_is_503_and_stores_nothing(client, app_without_redis):
    conversation_id = open_conversation(client)
    before = counts()

    response = app_without_redis.test_client().post(
        "/webhook/", json=new_message(new_id(), conversation_id)
    )

    assert_unavailable(response)
    assert counts() == before == (1, 0, 0)


def test_retried_message_is_accepted_once_redis_is_back(client, app_without_redis):
    conversation_id = open_conversation(client)
    event = new_message(new_id(), conversation_id)
    assert_unavailable(app_without_redis.test_client().post("/webhook/", json=event))
    response = client.post("/webhook/", json=event)
    assert response.status_code == 202
    assert counts() == (1, 1, 0)


def test_reads_without_redis_still_work(client, app_without_redis):
    conversation_id = open_conversation(client)
    client.post("/webhook/", json=new_message(new_id(), conversation_id))
    broken = app_without_redis.test_client()

    response = broken.get(f"/conversations/{conversation_id}/")

    assert response.status_code == 200
    assert len(response.get_json()["messages"]) == 1
    assert broken.get("/conversations/").status_code == 200


def test_activity_without_redis_is_503(client, app_without_redis):
    conversation_id = open_conversation(client)
    response = app_without_redis.test_client().get(f"/conversations/{conversation_id}/activity")
    assert_unavailable(response)


def open_transactions():
    """Sessions of the test database other than this one that sit inside a transaction."""
    db.session.rollback()
    return db.session.execute(
        text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%'"
        )
    ).scalar_one()


def test_message_whose_buffer_write_fails_is_503_and_leaves_nothing_open(client, monkeypatch):
    """The row is not committed before its buffer entry: a failed write rolls it back."""
    conversation_id = open_conversation(client)

    def redis_down(*args, **kwargs):
        raise redis.exceptions.ConnectionError("Redis went away")

    monkeypatch.setattr(groups, "add_to_group", redis_down)
    event = new_message(new_id(), conversation_id)
    assert_unavailable(client.post("/webhook/", json=event))
    assert counts() == (1, 0, 0)
    # The pooled connection went back without its transaction (and the conversation's lock).
    assert open_transactions() == 0

    monkeypatch.undo()
    assert client.post("/webhook/", json=event).status_code == 202
    assert counts() == (1, 1, 0)


def test_retry_during_a_stalled_buffer_write_is_accepted_once(app, client, monkeypatch):
    """A sender that retries while the first delivery hangs on Redis is not told 'duplicate'
    for a message that then fails: the retry waits for the first to commit or roll back."""
    conversation_id = open_conversation(client)
    event = new_message(new_id(), conversation_id)
    add_to_group, stalled, release = groups.add_to_group, threading.Event(), threading.Event()
    calls = []

    def first_stalls_then_fails(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            stalled.set()
            release.wait(10)
            raise redis.exceptions.TimeoutError("Timeout reading from Redis")
        return add_to_group(*args, **kwargs)

    monkeypatch.setattr(groups, "add_to_group", first_stalls_then_fails)
    statuses = {}

    def deliver(name):
        with app.app_context():
            statuses[name] = app.test_client().post("/webhook/", json=event).status_code

    first = threading.Thread(target=deliver, args=("first",))
    first.start()
    assert stalled.wait(10)
    retry = threading.Thread(target=deliver, args=("retry",))
    retry.start()
    retry.join(0.5)
    assert retry.is_alive()  # waiting on the first delivery's uncommitted row
    release.set()
    first.join(10)
    retry.join(10)

    assert statuses == {"first": 503, "retry": 202}
    assert counts() == (1, 1, 0)
    assert [m["id"] for m in messages(client, conversation_id)] == [event["data"]["id"]]
