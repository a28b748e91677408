"""Prepared statements and the autocommit engine of the message hot path, on PostgreSQL."""

import gc
import logging
import select
import time

import pytest
import sqlalchemy.exc
from psycopg2 import extensions
from sqlalchemy import text

from service.extensions import db
from service.infra.database import autocommit_engine
from service.infra.statements import LOCK_CONVERSATIONS, run_on_driver
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
    with nothing stored, the pool's connections are recycled, and the retry is accepted."""
    app = make_app(DB_PING_IDLE_SECONDS=3600)  # so only the statement meets the dead link
    with app.app_context():
        client = app.test_client()
        conversation_id = open_conversation(client)
        post(client, new_message(new_id(), conversation_id), 202)
        engine = autocommit_engine()
        pool = engine.pool
        with engine.connect() as connection:
            backend = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        terminate(backend)

        message_id = new_id()
        response = client.post("/webhook/", json=new_message(message_id, conversation_id))
        assert response.status_code == 503, response.get_json()
        # The pool stays; its connections older than the error are recycled at checkout.
        assert engine.pool is pool and pool._invalidate_time > 0
        post(client, new_message(message_id, conversation_id), 202)
        stored = db.session.execute(
            text("SELECT count(*) FROM messages WHERE id = :id"), {"id": message_id}
        ).scalar_one()
        assert stored == 1


def backend_pid(connection):
    return connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()


def live_backends(pids):
    with db.engine.connect() as other:
        rows = other.execute(
            text("SELECT pid FROM pg_stat_activity WHERE pid = ANY(:pids)"), {"pids": list(pids)}
        )
        return {row[0] for row in rows}


def terminate(*pids):
    """End these backends of the test database, and wait until they are gone."""
    with db.engine.connect() as other:
        other.execute(
            text("SELECT pg_terminate_backend(pid) FROM unnest(:pids) pid"), {"pids": list(pids)}
        )
    deadline = time.monotonic() + 5
    while live_backends(pids):
        assert time.monotonic() < deadline, f"backends {pids} still alive"


@pytest.fixture
def no_gc():
    """A pool dropped with its connections is only closed by the cyclic collector: keep the
    collector from hiding it."""
    gc.disable()
    yield
    gc.enable()
    gc.collect()


def test_one_dropped_connection_leaves_no_healthy_one_open_outside_the_pool(app, no_gc):
    """One backend ends (pg_terminate_backend, idle_session_timeout, a call past
    DB_READ_TIMEOUT_SECONDS): the pool's other connections are recycled at their next
    checkout, none left open outside it."""
    engine = autocommit_engine()
    engine.dispose()
    connections = [engine.connect() for _ in range(5)]
    pids = [backend_pid(c) for c in connections]
    for connection in connections:
        connection.close()
    terminate(pids[0])
    with pytest.raises(sqlalchemy.exc.OperationalError):
        for _ in range(5):
            with engine.connect() as connection:
                run_on_driver(connection, "SELECT 1").close()
    connections = [engine.connect() for _ in range(5)]  # traffic goes on, five at once
    for connection in connections:
        run_on_driver(connection, "SELECT 1").close()
    for connection in connections:
        connection.close()
    assert live_backends(pids) == set()


def test_a_second_disconnect_of_the_same_outage_keeps_the_new_connections(app, no_gc):
    """Two threads held a connection each when the database restarted: the second error,
    on a connection older than the first's, does not drop what was opened in between."""
    engine = autocommit_engine()
    engine.dispose()
    first, second = engine.connect(), engine.connect()
    terminate(backend_pid(first), backend_pid(second))
    with pytest.raises(sqlalchemy.exc.OperationalError):
        run_on_driver(first, "SELECT 1")
    first.close()
    with engine.connect() as fresh:  # another thread, after the first error
        fresh_pid = backend_pid(fresh)
    with pytest.raises(sqlalchemy.exc.OperationalError):
        run_on_driver(second, "SELECT 1")
    second.close()
    with engine.connect() as again:
        assert backend_pid(again) == fresh_pid


class Interrupt(BaseException):
    """What a gevent timeout or a KeyboardInterrupt looks like out of a wait callback."""


def test_an_interrupt_mid_statement_discards_the_connection_quietly(app, caplog):
    """psycopg2 closes a connection interrupted mid-call; it is invalidated, not handed back
    to the pool to fail its reset with an ERROR and a traceback."""
    engine = autocommit_engine()
    armed = []

    def wait(conn):
        while True:
            state = conn.poll()
            if state == extensions.POLL_OK:
                return
            if state == extensions.POLL_READ and armed:
                armed.clear()
                raise Interrupt()
            if state == extensions.POLL_READ:
                select.select([conn.fileno()], [], [])
            else:
                select.select([], [conn.fileno()], [])

    previous = extensions.get_wait_callback()
    extensions.set_wait_callback(wait)
    try:
        with caplog.at_level(logging.ERROR):
            connection = engine.connect()
            armed.append(True)
            with pytest.raises(Interrupt):
                run_on_driver(connection, "BEGIN; SELECT pg_sleep(0.2)")
            invalidated = connection.invalidated
            connection.close()
    finally:
        extensions.set_wait_callback(previous)
    assert invalidated
    assert not [r for r in caplog.records if "reset" in r.getMessage()]


def test_a_prelude_is_a_fixed_postgresql_statement(app):
    with db.engine.connect() as connection:
        with pytest.raises(ValueError, match="without '%'"):
            LOCK_CONVERSATIONS.execute(connection, prelude="SET x = '5%'", ids=[])
