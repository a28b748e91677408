"""Container health checks, one per role; exit 0 when healthy, 1 when not.

    python /app/docker/healthcheck.py web|worker|scheduler|postgres

Kept out of the app on purpose: importing the app (SQLAlchemy, flask-smorest, the OpenAPI spec)
costs more than the check itself, and a check must work when the app is wedged. Only urllib,
redis, psycopg2 and the standard-library-only `service.config` are imported.

- web: GET /healthz on this container's PORT (process alive). A 404 there (an image built
  before /healthz existed) falls back to GET /openapi.json, which the app always serves.
- worker: this container's RQ worker is registered in Redis. RQ keeps `rq:worker:<name>` alive
  with a TTL it refreshes on every heartbeat and records the worker's hostname in it; the
  container's hostname is its own, so each replica checks itself under `--scale worker=N`.
- scheduler: the scheduler heartbeat key exists (`conversations:scheduler:heartbeat`, refreshed
  on every poll, expires about 10 s after the last one). It names no host, so this is "a
  scheduler is running", which is what the service needs; a crashed process ends the container.
- postgres: the database in DATABASE_URL accepts connections (used by the one-shot migrate).
"""

import os
import socket
import sys
import urllib.error
import urllib.request


def web():
    base = f"http://127.0.0.1:{os.environ.get('PORT', '8000')}"
    try:
        with urllib.request.urlopen(base + "/healthz", timeout=3) as response:
            return response.status == 200
    except urllib.error.HTTPError as error:
        if error.code != 404:
            return False
    with urllib.request.urlopen(base + "/openapi.json", timeout=3) as response:
        return response.status == 200


def redis_client():
    """The Redis of REDIS_URL, or the master the sentinels of REDIS_SENTINELS name."""
    import redis
    import redis.sentinel

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from service.config import sentinel_settings

    url = os.environ.get("REDIS_URL") or "redis://localhost:6379/0"
    timeouts = {"socket_connect_timeout": 2, "socket_timeout": 2}
    sentinel = sentinel_settings(os.environ)
    if not sentinel:
        return redis.Redis.from_url(url, **timeouts)
    target = redis.connection.parse_url(url)
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    once = {**timeouts, "retry": Retry(NoBackoff(), 0)}
    manager = redis.sentinel.Sentinel(
        sentinel["sentinels"], sentinel_kwargs={**once, "password": sentinel["password"]}
    )
    return manager.master_for(
        sentinel["master"],
        db=target.get("db", 0),
        username=target.get("username"),
        password=target.get("password"),
        **once,
    )


def worker():
    client = redis_client()
    hostname = socket.gethostname().encode()
    return any(client.hget(key, "hostname") == hostname for key in client.smembers("rq:workers"))


def scheduler():
    # Written by PreciseScheduler.heartbeat on every poll, expires ~10 s after the last one.
    return redis_client().exists("conversations:scheduler:heartbeat") == 1


def postgres():
    import psycopg2

    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql")):
        return True
    psycopg2.connect(url.replace("+psycopg2", "", 1), connect_timeout=3).close()
    return True


CHECKS = {"web": web, "worker": worker, "scheduler": scheduler, "postgres": postgres}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in CHECKS:
        sys.exit(f"usage: healthcheck.py {'|'.join(CHECKS)}")
    try:
        healthy = CHECKS[sys.argv[1]]()
    except Exception as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        sys.exit(1)
    print("healthy" if healthy else "unhealthy")
    sys.exit(0 if healthy else 1)
