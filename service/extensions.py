"""Extensions, created unbound here and bound to the app in `create_app`."""

import redis
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from psycopg2.extensions import TRANSACTION_STATUS_IDLE
from sqlalchemy import MetaData, create_engine, event
from sqlalchemy.engine import Engine

from flask import current_app

from service.api import Api
from service.sql import POSTGRESQL, PREPARE_OPTION

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

db = SQLAlchemy(metadata=MetaData(naming_convention=NAMING_CONVENTION))
migrate = Migrate()
api = Api()


class RedisClient:
    """Holds one Redis connection pool per app; RQ needs raw bytes, so no decoding."""

    def init_app(self, app):
        app.extensions["redis"] = redis.Redis.from_url(
            app.config["REDIS_URL"],
            protocol=2,
            socket_connect_timeout=2,
            socket_timeout=5,
            health_check_interval=30,
        )

    @property
    def client(self):
        return current_app.extensions["redis"]


redis_client = RedisClient()


def init_autocommit_engine(app):
    """On PostgreSQL, a second engine whose connections run in autocommit mode.

    The message hot path (service.events.accept_message) sends its own BEGIN together with
    its one statement, then COMMIT: two round trips instead of psycopg2's BEGIN, statement,
    COMMIT. Its own pool, because switching a pooled connection in and out of autocommit
    costs round trips of its own. A connection that comes back to the pool inside a
    transaction (an exception, a rejected message) is rolled back there, since psycopg2's
    own rollback does nothing in autocommit mode. It is disposed with the main engine.
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
