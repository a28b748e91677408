"""PostgreSQL or Redis down: 503 with Retry-After, nothing half-done, never a 500."""

import pytest
import redis.exceptions
from sqlalchemy import func, select

from service import create_app, events
from service.extensions import db
from service.models import Conversation, HeldMessage, Message
from tests import conftest
from tests.helpers import (
    close_conversation,
    messages,
    new_conversation,
    new_id,
    new_message,
    open_conversation,
    reply_ids,
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


def test_message_whose_buffer_write_fails_is_503_and_taken_back(client, monkeypatch):
    """The row commits before the buffer write; a failed write deletes it again."""
    conversation_id = open_conversation(client)

    def redis_down(*args, **kwargs):
        raise redis.exceptions.ConnectionError("Redis went away")

    monkeypatch.setattr(events, "_add_to_group", redis_down)
    event = new_message(new_id(), conversation_id)
    assert_unavailable(client.post("/webhook/", json=event))
    assert counts() == (1, 0, 0)

    monkeypatch.undo()
    assert client.post("/webhook/", json=event).status_code == 202
    assert counts() == (1, 1, 0)


def test_message_answered_before_its_buffer_write_failed_stays_answered(client, monkeypatch):
    """A close that answered the message in between wins: it is not deleted from under it."""
    conversation_id = open_conversation(client)
    message_id = new_id()

    def close_then_fail(*args, **kwargs):
        client.post("/webhook/", json=close_conversation(conversation_id))
        raise redis.exceptions.ConnectionError("Redis went away")

    monkeypatch.setattr(events, "_add_to_group", close_then_fail)
    assert_unavailable(client.post("/webhook/", json=new_message(message_id, conversation_id)))

    [inbound, reply] = messages(client, conversation_id)
    assert inbound["id"] == message_id
    assert reply_ids(reply) == [message_id]
