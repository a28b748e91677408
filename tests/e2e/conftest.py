"""A live stack for end-to-end tests: gunicorn, two RQ workers and two schedulers.

It runs as real processes on its own PostgreSQL database and Redis index, so the periodic
jobs of the live stack never touch the data of the other tests.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
import requests
from flask_migrate import upgrade
from sqlalchemy import create_engine, text

from service import create_app
from service.config import database_url
from tests.conftest import TEST_DATABASE_URL, TEST_REDIS_URL, app_config, reset_schema

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


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


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveStack:
    """The service's processes, started and stopped by the tests."""

    def __init__(self, env):
        self.env = env
        self.base_url = f"http://127.0.0.1:{env['PORT']}"
        self.web = None
        self.workers = []
        self.schedulers = []
        self.logs = ROOT / "instance" / "e2e-logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def _spawn(self, name, *args):
        with open(self.logs / f"{name}.log", "ab") as log:
            return subprocess.Popen(
                args,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def start(self, workers=2, schedulers=2):
        self.web = self._spawn("web", str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app")
        self.start_workers(workers)
        for i in range(schedulers):
            self.schedulers.append(self._spawn(f"scheduler-{i}", str(BIN / "flask"), "scheduler"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(self.base_url + "/openapi.json", timeout=1).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError("the live stack did not start; see instance/e2e-logs")

    def start_workers(self, count=2):
        for _ in range(count):
            n = len(self.workers)
            self.workers.append(self._spawn(f"worker-{n}", str(BIN / "flask"), "worker"))

    def kill_workers(self):
        """SIGKILL every worker, as an OOM killer or a lost machine would."""
        for process in self.workers:
            process.kill()
            process.wait()
        self.workers = []

    def stop(self):
        for process in [self.web, *self.workers, *self.schedulers]:
            if process and process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in [self.web, *self.workers, *self.schedulers]:
            if process:
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)

    def post(self, event):
        return requests.post(self.base_url + "/webhook/", json=event, timeout=10)

    def conversation(self, conversation_id):
        return requests.get(f"{self.base_url}/conversations/{conversation_id}/", timeout=10).json()


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
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "REDIS_URL": redis_url,
        "PORT": str(free_port()),
        "HOST": "127.0.0.1",
        "FLASK_APP": "wsgi",
        "WEB_CONCURRENCY": "2",
        "LOG_LEVEL": "INFO",
        "RECONCILE_INTERVAL": "1",
        "PYTHONUNBUFFERED": "1",
    }
    stack = LiveStack(env)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
