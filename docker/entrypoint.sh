#!/bin/sh
# Container entrypoint: wait (bounded) for PostgreSQL and Redis, then exec the command, so the
# command becomes the container's main process and receives its signals (SIGTERM: graceful stop).
#
#   WAIT_TIMEOUT  seconds to wait for both services before giving up (default 60; 0 = no wait)
#
# A SQLite DATABASE_URL (or none) skips the database wait; an unset REDIS_URL skips Redis. With
# REDIS_SENTINELS set, the wait is for the master the sentinels name (healthcheck.redis_client).
set -eu

if [ "${WAIT_TIMEOUT:-60}" != "0" ]; then
  HERE=$(dirname "$0") python - <<'PY'
import os
import sys
import time

import psycopg2

sys.path.insert(0, os.environ["HERE"])
from healthcheck import redis_client  # noqa: E402

deadline = time.monotonic() + float(os.environ.get("WAIT_TIMEOUT") or 60)


def wait(name, check):
    attempt = 0
    while True:
        attempt += 1
        try:
            check()
            if attempt > 1:
                print(f"entrypoint: {name} is up", file=sys.stderr)
            return
        except Exception as exc:  # any failure to connect is a reason to retry
            if time.monotonic() >= deadline:
                print(f"entrypoint: {name} unreachable, giving up: {exc}", file=sys.stderr)
                sys.exit(1)
            if attempt == 1:
                print(f"entrypoint: waiting for {name} ({exc})".strip(), file=sys.stderr)
            time.sleep(min(0.2 * 2**attempt, 2.0))


database = os.environ.get("DATABASE_URL", "")
if database.startswith(("postgres://", "postgresql://", "postgresql+psycopg2://")):
    dsn = database.replace("postgresql+psycopg2://", "postgresql://", 1)
    wait("PostgreSQL", lambda: psycopg2.connect(dsn, connect_timeout=3).close())

if os.environ.get("REDIS_URL") or os.environ.get("REDIS_SENTINELS"):
    wait("Redis", lambda: redis_client().ping())
PY
fi

exec "$@"
