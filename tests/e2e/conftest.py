"""A live stack for end-to-end tests: gunicorn, two RQ workers and two schedulers.

It runs as real processes on its own PostgreSQL database and Redis index, so the periodic
jobs of the live stack never touch the data of the other tests.
"""

from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from flask_migrate import upgrade
from sqlalchemy import create_engine, text

from service import create_app
from service.config import database_url
from tests.conftest import TEST_DATABASE_URL, TEST_REDIS_URL, app_config, reset_schema
from tests.stack import LiveStack, stack_env


def sibling_database(url, suffix):
    """The URL of a database next to the test database, created when missing."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/") + suffix
    engine = create_engine(database_url(url), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})
        if not exists.scalar():
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return urlunsplit(parts._replace(path="/" + name))


def sibling_redis(url):
    """The Redis index just below the test index (15 -> 14, 10 -> 9; 0 wraps to 15).

    Derived from TEST_REDIS_URL, so runs given different test indexes also get different
    live-stack indexes and never flush each other's data.
    """
    parts = urlsplit(url)
    index = int(parts.path.lstrip("/") or 0)
    return urlunsplit(parts._replace(path=f"/{(index - 1) % 16}"))


@pytest.fixture(scope="session")
def live_stack():
    """The whole service running as real processes, on its own database and Redis index.

    The database is `<test db>_live`; the Redis index is the test index minus one.
    """
    db_url = sibling_database(TEST_DATABASE_URL, "_live")
    redis_url = sibling_redis(TEST_REDIS_URL)
    reset_schema(db_url)
    app = create_app(app_config(SQLALCHEMY_DATABASE_URI=database_url(db_url)))
    with app.app_context():
        upgrade()
        from service.extensions import db

        db.engine.dispose()
    redis.Redis.from_url(redis_url).flushdb()
    stack = LiveStack(stack_env(db_url, redis_url))
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
