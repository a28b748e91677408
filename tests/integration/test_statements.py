"""Prepared statements and the autocommit engine of the message hot path, on PostgreSQL."""

import pytest
import sqlalchemy.exc
from sqlalchemy import text

from service.extensions import db
from service.infra.database import autocommit_engine
from service.infra.statements import run_on_driver
from tests.helpers import new_id, new_message, open_conversation, post


def prepared_statements(connection):
    return set(
        connection.exec_driver_sql("SELECT name FROM pg_prepared_statements").scalars().all()
    )


def test_message_statement_is_prepared_once_per_connection(app, client):
    conversation_id = open_conversation(client)
    engine = autocommit_engine()
    assert engine is not db.engine
    engine.dispose()

    post(client, new_message(new_id(), conversation_id), 202)
    with engine.connect() as connection:
        assert prepared_statements(connection) == {"accept_message"}
        assert connection.connection.info["prepared_statements"] == {"accept_message"}
    post(client, new_message(new_id(), conversation_id), 202)
    with engine.connect() as connection:
        assert prepared_statements(connection) == {"accept_message"}


def test_messages_are_stored_again_after_the_pool_is_replaced(app, client):
    """New connections (a database restart, pool recycling) prepare the statement again."""
    conversation_id = open_conversation(client)
    post(client, new_message(new_id(), conversation_id), 202)

    db.engine.dispose()  # disposes the autocommit engine with it
    assert autocommit_engine().pool.checkedin() == 0
    post(client, new_message(new_id(), conversation_id), 202)

    count = db.session.execute(text("SELECT count(*) FROM messages")).scalar_one()
    assert count == 2


def test_an_accepted_message_is_committed(app, client):
    """A message is visible to other connections as soon as the webhook answers."""
    conversation_id = open_conversation(client)
    message_id = new_id()
    post(client, new_message(message_id, conversation_id), 202)
    with db.engine.connect() as other:
        found = other.execute(
            text("SELECT count(*) FROM messages WHERE id = :id"), {"id": message_id}
        ).scalar_one()
    assert found == 1


def test_prepared_statements_can_be_turned_off(make_app):
    """Behind PgBouncer in transaction mode a connection may not keep what it prepared."""
    app = make_app(DB_PREPARED_STATEMENTS=False)
    with app.app_context():
        client = app.test_client()
        conversation_id = open_conversation(client)
        post(client, new_message(new_id(), conversation_id), 202)
        with autocommit_engine().connect() as connection:
            assert prepared_statements(connection) == set()


def test_a_statement_prepared_behind_our_back_is_used(app, client):
    """A PREPARE whose bookkeeping was lost (an interrupted first use) does not wedge the
    connection with 'prepared statement already exists'."""
    conversation_id = open_conversation(client)
    post(client, new_message(new_id(), conversation_id), 202)
    with autocommit_engine().connect() as connection:
        connection.connection.info["prepared_statements"].clear()

    post(client, new_message(new_id(), conversation_id), 202)
    post(client, new_message(new_id(), conversation_id), 202)


def test_a_driver_error_on_the_hot_path_is_sqlalchemys_and_leaves_the_connection(app):
    """The hot path runs on the DBAPI cursor; its errors are still SQLAlchemy's classes."""
    with autocommit_engine().connect() as connection:
        with pytest.raises(sqlalchemy.exc.DataError, match="division by zero"):
            run_on_driver(connection, "SELECT 1 / 0")
        assert not connection.invalidated
        cursor = run_on_driver(connection, "SELECT 2")
        assert cursor.fetchone() == (2,)
        cursor.close()


def test_a_connection_dropped_under_the_hot_path_is_a_503_then_replaced(make_app):
    """A database restart kills pooled connections: the message on one of them gets a 503
    with nothing stored, the pool is replaced, and the retry is accepted."""
    app = make_app(DB_PING_IDLE_SECONDS=3600)  # so only the statement meets the dead link
    with app.app_context():
        client = app.test_client()
        conversation_id = open_conversation(client)
        post(client, new_message(new_id(), conversation_id), 202)
        engine = autocommit_engine()
        pool = engine.pool
        with engine.connect() as connection:
            backend = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        with db.engine.connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})

        message_id = new_id()
        response = client.post("/webhook/", json=new_message(message_id, conversation_id))
        assert response.status_code == 503, response.get_json()
        assert engine.pool is not pool
        post(client, new_message(message_id, conversation_id), 202)
        stored = db.session.execute(
            text("SELECT count(*) FROM messages WHERE id = :id"), {"id": message_id}
        ).scalar_one()
        assert stored == 1
