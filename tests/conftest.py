"""Shared fixtures: real PostgreSQL and Redis, schema built once by the real migrations."""

import os

import pytest
import redis
from flask_migrate import upgrade
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from service import create_app
from service.config import database_url
from service.domain import clock

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
TABLES = "messages, held_messages, conversations"


def reset_schema(url):
    """Drop everything in the public schema, so the migrations start from empty."""
    engine = create_engine(database_url(url))
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()


def app_config(**overrides):
    config = {
        "TESTING": True,
        "SQLALCHEMY_DATABASE_URI": database_url(TEST_DATABASE_URL),
        "REDIS_URL": TEST_REDIS_URL,
    }
    config.update(overrides)
    return config


@pytest.fixture(scope="session")
def _schema():
    """The test database, migrated once per run."""
    reset_schema(TEST_DATABASE_URL)
    app = create_app(app_config())
    with app.app_context():
        upgrade()
        from service.extensions import db

        db.engine.dispose()


@pytest.fixture
def redis_conn():
    """The dedicated Redis database, empty before and after each test."""
    conn = redis.Redis.from_url(TEST_REDIS_URL, protocol=2)
    conn.flushdb()
    yield conn
    conn.flushdb()
    conn.close()


def empty_tables(app):
    """Remove every row the test wrote (skipped when the test pointed at no database)."""
    from service.extensions import db

    with app.app_context():
        db.session.remove()
        try:
            with db.engine.begin() as conn:
                conn.execute(text(f"TRUNCATE {TABLES} CASCADE"))
        except OperationalError:
            pass
        db.engine.dispose()


@pytest.fixture
def make_app(_schema, redis_conn):
    """Build apps with config overrides; the tables are emptied afterwards."""
    apps = []

    def make(**overrides):
        apps.append(create_app(app_config(**overrides)))
        return apps[-1]

    yield make
    for app in apps:
        empty_tables(app)


@pytest.fixture
def app(make_app):
    """An app on the test database and Redis, inside its app context."""
    app = make_app()
    with app.app_context():
        yield app


@pytest.fixture
def client(app):
    """HTTP client of the app."""
    return app.test_client()


@pytest.fixture
def runner(app):
    """CLI runner of the app."""
    return app.test_cli_runner()


class FakeClock:
    """The arrival clock, moved by hand."""

    def __init__(self, start_us):
        self.us = start_us

    def __call__(self):
        return self.us

    def advance(self, seconds):
        self.us += round(seconds * 1_000_000)


@pytest.fixture
def fake_clock(monkeypatch):
    """Freeze the service's clock; tests advance it explicitly."""
    fake = FakeClock(clock.now_us())
    monkeypatch.setattr(clock, "now_us", fake)
    return fake
