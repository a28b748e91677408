"""Smoke test of the embedded default: the same flows on a SQLite file, migrated for real."""

import pytest
from flask_migrate import upgrade
from sqlalchemy import text

from service import create_app
from service.extensions import db
from tests import conftest
from tests.helpers import (
    close_conversation,
    messages,
    new_id,
    new_message,
    open_conversation,
    post,
)


@pytest.fixture
def sqlite_app(tmp_path, redis_conn):
    """An app on a fresh SQLite file with the migrations applied."""
    url = f"sqlite:///{tmp_path / 'conversations.db'}"
    app = create_app(conftest.app_config(SQLALCHEMY_DATABASE_URI=url))
    with app.app_context():
        upgrade()
        yield app
        db.session.remove()
        db.engine.dispose()


def test_sqlite_smoke(sqlite_app):
    client = sqlite_app.test_client()
    with db.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"

    conversation_id = open_conversation(client)
    message_id = new_id()
    response = post(client, new_message(message_id, conversation_id, "Olá"), 202)
    assert response.get_json()["status"] == "accepted"
    response = post(client, new_message(message_id, conversation_id, "Olá"), 400)
    assert response.get_json()["error"] == "duplicate_message"

    assert messages(client, conversation_id) == [
        {
            "id": message_id,
            "type": "INBOUND",
            "content": "Olá",
            "timestamp": "2025-06-04T14:20:05+00:00",
        }
    ]

    response = post(client, close_conversation(conversation_id), 200)
    assert response.get_json()["status"] == "CLOSED"
    inbound, reply = messages(client, conversation_id)
    assert inbound["id"] == message_id
    assert reply["type"] == "OUTBOUND"
    assert reply["content"] == f"Mensagens recebidas:\n{message_id}\n"
    assert reply["timestamp"].endswith("+00:00")

    listed = client.get("/conversations/").get_json()["items"]
    assert [(c["id"], c["status"], c["message_count"]) for c in listed] == [
        (conversation_id, "CLOSED", 2)
    ]
    post(client, new_message(new_id(), conversation_id), 400)


def test_sqlite_id_prefix_search(sqlite_app):
    client = sqlite_app.test_client()
    conversation_id = open_conversation(client)
    for prefix in (conversation_id[:4], conversation_id[:13], conversation_id.upper()):
        listed = client.get(f"/conversations/?q={prefix}").get_json()["items"]
        assert [c["id"] for c in listed] == [conversation_id], prefix


def test_sqlite_reply_pipeline(sqlite_app, fake_clock):
    """The worker side on SQLite: a held message joins, the group is answered by a real job."""
    from service import jobs
    from tests.helpers import new_conversation, replies, reply_ids, run_due_jobs

    client = sqlite_app.test_client()
    conversation_id, held = new_id(), new_id()
    post(client, new_message(held, conversation_id), 202)
    fake_clock.advance(2)
    post(client, new_conversation(conversation_id), 201)
    later = new_id()
    post(client, new_message(later, conversation_id), 202)
    fake_clock.advance(5)
    run_due_jobs()
    [reply] = replies(client, conversation_id)
    assert reply_ids(reply) == [held, later]
    assert jobs.expire_held() == 0
    fake_clock.advance(10)
    assert jobs.reconcile_groups() == []
