"""Shared fixtures: real PostgreSQL and Redis, schema built once by the real migrations.

The tests use only the PostgreSQL database TEST_DATABASE_URL and the Redis index
TEST_REDIS_URL (README, "Quick start"), and never write a tracked file: a run that leaves a
tracked file modified which was clean when it started fails (`pytest_sessionfinish` below).
"""

import os
import shutil
import subprocess
from pathlib import Path

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
ROOT = Path(__file__).resolve().parents[1]
_MODIFIED_AT_START = pytest.StashKey[set]()
_WRITTEN = pytest.StashKey[list]()


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


@pytest.fixture(params=["postgresql", "sqlite"])
def app_on_each_backend(request, make_app, tmp_path):
    """An app, inside its context, on the test PostgreSQL database, then on a SQLite file
    built by the migrations."""
    overrides = {}
    if request.param == "sqlite":
        overrides["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{tmp_path / 'service.db'}"
    app = make_app(**overrides)
    with app.app_context():
        if request.param == "sqlite":
            upgrade()
        yield app
        from service.extensions import db

        db.session.remove()


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


# --- lanes of `pytest -n` (make test; tests/lanes.py) --------------------------------
_LANE = pytest.StashKey[str]()
_FAULT_ROWS = pytest.StashKey[list]()


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    from tests.lanes import LaneScheduling

    return LaneScheduling(config, log)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """On a worker of `pytest -n`, set its priority by the lane of the test when the lane
    changes (with fewer workers than lanes one runs two), before any fixture starts a
    process."""
    if not hasattr(item.config, "workerinput"):
        return
    from tests.lanes import lane_of, set_priority

    lane = lane_of(item.nodeid)
    if item.config.stash.get(_LANE, None) != lane:
        set_priority(item.nodeid)
        item.config.stash[_LANE] = lane


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """Gather the fault figures of each lane (tests/faults/conftest.py hands them over)."""
    rows = getattr(node, "workeroutput", {}).get("fault_result_rows")
    if rows:
        node.config.stash.setdefault(_FAULT_ROWS, []).extend(rows)


# --- no test writes a tracked file ---------------------------------------------------


def modified_tracked_files():
    """The tracked files of the checkout that differ from HEAD or the index, or None when
    this is not a git checkout (or git is missing)."""
    if shutil.which("git") is None:
        return None
    # --no-optional-locks: never take the index lock someone committing may need.
    command = ["git", "--no-optional-locks", "status", "--porcelain=v1", "-z"]
    done = subprocess.run(
        [*command, "--untracked-files=no"], cwd=ROOT, capture_output=True, check=False
    )
    if done.returncode != 0:
        return None
    entries = done.stdout.decode(errors="replace").split("\0")
    found, skip = set(), False
    for entry in entries:
        if skip or not entry:
            skip = False
            continue
        # A rename is "R  new\0old": the old name follows as an entry of its own.
        skip = entry[0] in "RC"
        found.add(entry[3:])
    return found


def pytest_sessionstart(session):
    """Note the tracked files already modified (by whoever is editing the checkout)."""
    # TESTS_ALLOW_EDITS=1: someone edits the checkout while the tests run (their edits would
    # show as written by the run).
    allowed = os.environ.get("TESTS_ALLOW_EDITS", "") not in ("", "0")
    if not hasattr(session.config, "workerinput") and not allowed:
        session.config.stash[_MODIFIED_AT_START] = modified_tracked_files()


def pytest_sessionfinish(session):
    """Fail the run when a tracked file clean at the start is modified at the end. Files
    already modified are left out: others may be editing them while the tests run."""
    before = session.config.stash.get(_MODIFIED_AT_START, None)
    after = modified_tracked_files() if before is not None else None
    if after is None:
        return
    written = sorted(after - before)
    if written:
        session.config.stash[_WRITTEN] = written
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, config):
    rows = config.stash.get(_FAULT_ROWS, None)
    if rows:
        from tests.faults.harness import write_results

        write_results(terminalreporter, rows)
    written = config.stash.get(_WRITTEN, None)
    if written:
        terminalreporter.write_sep("=", "tracked files modified during the run", red=True)
        terminalreporter.write_line(
            "Tests must not write tracked files (clean at start, modified now; an edit made "
            "by hand during the run shows here too):"
        )
        for name in written:
            terminalreporter.write_line(f"  {name}")
