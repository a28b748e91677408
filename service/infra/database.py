"""Everything that differs between PostgreSQL and SQLite, behind one small interface.

PostgreSQL is the production database; SQLite is the embedded default for a quick local run.
The differences the pipeline would otherwise see:

- the message hot path (`message_transaction`): on PostgreSQL one prepared statement checks,
  locks and stores a message, with BEGIN sent in the same round trip on a connection pool of
  its own in autocommit mode, and COMMIT after the buffer write, both on the DBAPI cursor;
  on SQLite the same check and INSERT run as two statements in a BEGIN IMMEDIATE transaction;
- row locks (`Statement(lock=...)` in service.infra.statements), which SQLite does without
  because its transactions are serialised whole (`_sqlite_begin` below);
- WAL and a busy timeout, so the web and worker processes can share the SQLite file.
"""

import os
import select
import socket
import time
from contextlib import contextmanager

from psycopg2.extensions import TRANSACTION_STATUS_IDLE
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, InvalidatePoolError

from flask import current_app

from service.domain.rules import OPEN
from service.extensions import db
from service.infra.statements import (
    ACCEPT_CHECK,
    ACCEPT_MESSAGE,
    POSTGRESQL,
    PREPARE_OPTION,
    STORE_MESSAGE,
    run_on_driver,
)

# libpq waits forever on a stalled network path unless told otherwise: bound the connect, and
# let TCP keepalives find a peer that went away while a connection sat idle or waited.
POSTGRESQL_CONNECT_ARGS = {
    "connect_timeout": 2,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 3,
    "keepalives_count": 3,
}


def configure_engines(app):
    """Before `db.init_app`: connection settings of the database the app's URL names."""
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith(POSTGRESQL):
        options = app.config["SQLALCHEMY_ENGINE_OPTIONS"]
        options["connect_args"] = {**POSTGRESQL_CONNECT_ARGS, **options.get("connect_args", {})}


def check_idle_connections(engine, idle_seconds):
    """Ping a pooled connection at checkout when it sat unused for more than `idle_seconds`.

    After a database restart every pooled connection is dead, and the first request on each
    would fail. Pinging every checkout (SQLAlchemy's pool_pre_ping) costs a round trip per
    request; pinging only idle ones costs nothing while the service is busy, and a restart
    takes longer than the idle time. A dead connection is replaced before use, and the whole
    pool with it (`InvalidatePoolError`).
    """

    @event.listens_for(engine, "checkin")
    def stamp(dbapi_connection, record):
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def ping_if_idle(dbapi_connection, record, proxy):
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since <= idle_seconds:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            if engine.dialect.is_disconnect(exc, dbapi_connection, None):
                raise InvalidatePoolError() from exc
            raise


def init_app(app):
    """On PostgreSQL, check idle connections before use, and create the hot path's engine,
    whose connections run in autocommit mode.

    The message hot path sends its own BEGIN together with its one statement, then COMMIT:
    two round trips instead of psycopg2's BEGIN, statement, COMMIT. Its own pool, because
    switching a pooled connection in and out of autocommit costs round trips of its own. A
    connection that comes back to the pool inside a transaction (an exception, a rejected
    message) is rolled back there, since psycopg2's own rollback does nothing in autocommit
    mode. It is disposed with the main engine.
    """
    with app.app_context():
        main = db.engine
        if main.dialect.name != POSTGRESQL:
            return
        engine = create_engine(
            main.url,
            isolation_level="AUTOCOMMIT",
            execution_options={PREPARE_OPTION: app.config["DB_PREPARED_STATEMENTS"]},
            **app.config["SQLALCHEMY_ENGINE_OPTIONS"],
        )
        event.listen(engine, "reset", _end_open_transaction)
        event.listen(main, "engine_disposed", lambda _: engine.dispose())
        idle = app.config["DB_PING_IDLE_SECONDS"]
        check_idle_connections(main, idle)
        check_idle_connections(engine, idle)
        app.extensions["autocommit_engine"] = engine


def _end_open_transaction(dbapi_connection, connection_record, reset_state):
    """Roll back a transaction left open on an autocommit connection returned to the pool.

    If that fails, SQLAlchemy discards the connection, and PostgreSQL rolls back with it.
    """
    if reset_state.terminate_only:
        return
    if dbapi_connection.info.transaction_status != TRANSACTION_STATUS_IDLE:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("ROLLBACK")


def autocommit_engine():
    """The engine of the message hot path: autocommit on PostgreSQL, the main one on SQLite."""
    return current_app.extensions.get("autocommit_engine") or db.engine


class MessageTransaction:
    """One message's transaction on the hot path: `store`, then `commit` (or leave: rollback)."""

    __slots__ = ("connection", "postgresql")

    def __init__(self, connection):
        self.connection = connection
        self.postgresql = connection.dialect.name == POSTGRESQL

    def store(self, **message):
        """Store a message, not committed yet, if its conversation is open and its id is new.

        `message` holds the `messages` columns (service.infra.statements.MESSAGE_COLUMNS).
        Returns (conversation status, status of a held message with this id, rows stored: 0
        or 1), or None when the conversation is unknown. The conversation's row stays share
        locked until the transaction ends, so a concurrent close or flush waits for it.
        """
        if self.postgresql:
            return ACCEPT_MESSAGE.first_row(self.connection, begin=True, **message)
        row = ACCEPT_CHECK.execute(
            self.connection, message_id=message["id"], conversation_id=message["conversation_id"]
        ).first()
        if row is None:
            return None
        if row[0] != OPEN or row[1] is not None:
            return row[0], row[1], 0
        return row[0], row[1], STORE_MESSAGE.execute(self.connection, **message).rowcount

    def commit(self):
        """Make the stored message durable; raises the database's error if it cannot."""
        if self.postgresql:
            # The BEGIN was ours, so is the COMMIT, on the driver as the statement was.
            run_on_driver(self.connection, "COMMIT").close()
        else:
            self.connection.commit()


@contextmanager
def message_transaction():
    """A `MessageTransaction` on a pooled connection; leaving it without `commit` rolls back.

    On SQLite the transaction begins here (BEGIN IMMEDIATE waits for the write lock); on
    PostgreSQL it begins with the first statement, in the same round trip.
    """
    with autocommit_engine().connect() as connection:
        if connection.dialect.name != POSTGRESQL:
            connection.begin()
        yield MessageTransaction(connection)


@event.listens_for(Engine, "connect")
def _sqlite_connect(dbapi_connection, connection_record):
    """WAL and a busy timeout let the web and worker processes share the file."""
    if type(dbapi_connection).__module__ != "sqlite3":
        return
    # Take over transaction control so `_sqlite_begin` can start them IMMEDIATE.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


@event.listens_for(Engine, "begin")
def _sqlite_begin(connection):
    """Serialise SQLite transactions up front, since it has no row locks to take later."""
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def commit_or_rollback(on_failure=None):
    """Commit the session's transaction; on any failure roll back, call `on_failure`, re-raise."""
    try:
        db.session.commit()
    except BaseException:
        db.session.rollback()
        if on_failure is not None:
            on_failure()
        raise


def insert_or_reject(statement, rejection):
    """Run an INSERT in the session; a unique violation (a concurrent duplicate) rolls back and
    raises `rejection` (a service.domain.rules.Rejected) instead."""
    try:
        db.session.execute(statement)
    except IntegrityError:
        db.session.rollback()
        raise rejection from None


def _sever(fileno):
    """Shut the connection's socket down in both directions.

    Closing the libpq connection is not possible in the middle of a query, and leaving it
    open is worse: once the path moves again, the server runs what was sent (a BEGIN and a
    locking statement) and then waits for a client that gave up, holding its locks. After a
    shutdown the server sees the end of the stream right after the statement and rolls back.
    """
    sock = socket.socket(fileno=os.dup(fileno))
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()


def bound_waits_of_serving_process(app):
    """`bound_waits` with DB_READ_TIMEOUT_SECONDS, when the app's database is PostgreSQL."""
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith(POSTGRESQL):
        bound_waits(app.config["DB_READ_TIMEOUT_SECONDS"])


def bound_waits(seconds):
    """Fail a PostgreSQL call that gets no answer within `seconds`, in this process.

    libpq has no read timeout: through a stalled network path (a proxy or a link that stops
    forwarding without closing) a query waits forever, and TCP keepalives do not help while
    the path itself answers. A psycopg2 wait callback waits for each answer with a deadline
    instead; on expiry the connection is closed and the call raises OperationalError
    ("could not receive data from server"), which SQLAlchemy takes as a disconnect (the pool
    is replaced) and the API as a 503. Installed by the serving processes only (gunicorn
    workers, RQ workers), never by migrations, whose statements may take longer.
    """
    import psycopg2
    from psycopg2 import extensions

    def wait(connection):
        deadline = time.monotonic() + seconds
        while True:
            state = connection.poll()
            if state == extensions.POLL_OK:
                return
            left = deadline - time.monotonic()
            fileno = connection.fileno()
            if state == extensions.POLL_READ:
                ready = left > 0 and select.select([fileno], [], [], left)[0]
            elif state == extensions.POLL_WRITE:
                ready = left > 0 and select.select([], [fileno], [], left)[1]
            else:
                raise psycopg2.OperationalError(f"unexpected poll state {state}")
            if not ready:
                _sever(fileno)
                raise psycopg2.OperationalError(
                    f"could not receive data from server: no answer within {seconds} s"
                )

    extensions.set_wait_callback(wait if seconds else None)
