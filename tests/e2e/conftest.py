"""A live stack for end-to-end tests: gunicorn, two RQ workers and two schedulers.

It runs as real processes on the test database and Redis index themselves (TEST_DATABASE_URL,
TEST_REDIS_URL: the only ones the tests use, README "Quick start"). The stack lives only while
the tests of this package run, so its workers and periodic jobs never run beside the other
tests, and both stores are emptied before it starts and after it stops.
"""

from contextlib import closing

import pytest
import redis
from sqlalchemy import create_engine, text

from service.config import database_url
from tests.conftest import TABLES, TEST_DATABASE_URL, TEST_REDIS_URL
from tests.stack import LiveStack, stack_env


def empty_stores():
    """Empty the test database's tables and the test Redis index."""
    engine = create_engine(database_url(TEST_DATABASE_URL))
    try:
        with engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {TABLES} CASCADE"))
    finally:
        engine.dispose()
    with closing(redis.Redis.from_url(TEST_REDIS_URL)) as conn:
        conn.flushdb()


@pytest.fixture(scope="package")
def live_stack(_schema):
    """The whole service running as real processes, on the (migrated) test database and Redis
    index; stopped after the last test of tests/e2e."""
    empty_stores()
    stack = LiveStack(stack_env(TEST_DATABASE_URL, TEST_REDIS_URL))
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        empty_stores()
