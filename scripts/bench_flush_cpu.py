"""CPU per answered group of the flush jobs, in-process: N conversations, each with a group of
two messages due, written through the service's own code (create_conversation and
accept_message, on a controlled clock) into a PostgreSQL database and a private Redis; then
the scheduler's poll moves every due flush to the queue (FLUSH_BATCH conversations a job) and
a burst worker runs the jobs in this process, as a worker would.

Prints the CPU time per group (ms) of the worker (this process, time.process_time), of the
PostgreSQL backends serving it (utime + stime of the database's client backends, from
/proc/<pid>/stat; the PostgreSQL server must run on this machine) and of Redis (INFO cpu of
a `redis-server --save ''` the script starts on --redis-port, so nothing else counts), the
wall time, and a JSON line with the same figures. The database's schema is wiped and
migrated first; its client backends other than this run's must be idle.

It benchmarks the checkout it is run from (the current directory is put first on the
import path), so one script file measures two checkouts side by side:

    .venv/bin/python scripts/bench_flush_cpu.py                      # 2,000 groups
    .venv/bin/python scripts/bench_flush_cpu.py --conversations 5000 --redis-port 19401
    cd ../other-checkout && ../flush/.venv/bin/python ../flush/scripts/bench_flush_cpu.py
"""

import argparse
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

MESSAGES_APART_S = 1  # the two messages of a group
FLUSH_AFTER_S = 7  # after the first message: the group is due at 6 s


class Clock:
    """The service's arrival clock, moved by hand (microseconds)."""

    def __init__(self, start_us):
        self.us = start_us

    def __call__(self):
        return self.us


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=2000)
    parser.add_argument(
        "--database-url", default="postgresql://postgres@127.0.0.1:5432/flush_bench"
    )
    parser.add_argument("--redis-port", type=int, default=19400)
    parser.add_argument("--label", default=None, help="a name for the run, printed with it")
    args = parser.parse_args()

    checkout = Path.cwd()
    sys.path.insert(0, str(checkout))
    with private_redis(args.redis_port) as redis_url:
        os.environ.update(DATABASE_URL=args.database_url, REDIS_URL=redis_url)
        figures = run(args, checkout)
    print(
        f"{figures['label']}: {figures['groups']} groups in {figures['jobs']} jobs; cpu ms per"
        f" group: worker {figures['worker_ms']:.3f}, postgresql {figures['postgresql_ms']:.3f},"
        f" redis {figures['redis_ms']:.3f}, total {figures['total_ms']:.3f};"
        f" wall {figures['wall_s']:.2f} s"
    )
    print(json.dumps(figures))


def run(args, checkout):
    """Prepare the groups, run the flushes, return the figures (a dict)."""
    import psycopg2
    import redis
    from flask_migrate import upgrade
    from rq.registry import FailedJobRegistry
    from sqlalchemy import text

    import service
    from service import create_app
    from service.domain import clock
    from service.domain.rules import RECEIVED
    from service.extensions import db, redis_client
    from service.infra.queueing import get_queue, get_scheduler, get_worker
    from service.pipeline.intake import accept_message
    from service.pipeline.lifecycle import create_conversation

    app = create_app()
    # The log lines are formatted as in production, then dropped.
    devnull = open(os.devnull, "w")
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(devnull)
    fake = Clock(clock.now_us())
    clock.now_us = fake
    with app.app_context():
        db.session.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        db.session.commit()
        upgrade()
        conversations = [uuid.uuid4() for _ in range(args.conversations)]
        sent = datetime.now(UTC)
        for conversation_id in conversations:
            create_conversation(conversation_id)
        for offset in (0, MESSAGES_APART_S):
            fake.us += offset * 1_000_000
            for conversation_id in conversations:
                accept_message(uuid.uuid4(), conversation_id, "hi", sent, RECEIVED)
        db.session.remove()
        fake.us += (FLUSH_AFTER_S - MESSAGES_APART_S) * 1_000_000
        with db.engine.begin() as connection:
            connection.execute(text("ANALYZE conversations; ANALYZE messages"))

        scheduler, worker = get_scheduler(), get_worker()
        scheduler.enqueue_jobs()
        jobs = get_queue().count
        monitor = psycopg2.connect(args.database_url)
        monitor.autocommit = True
        redis_server = redis.Redis.from_url(os.environ["REDIS_URL"])
        postgresql_before = backend_cpu(monitor)
        redis_before = redis_cpu(redis_server)
        started, cpu = time.monotonic(), time.process_time()
        worker.work(burst=True, with_scheduler=False, logging_level="WARNING")
        worker_s = time.process_time() - cpu
        wall_s = time.monotonic() - started
        redis_s = redis_cpu(redis_server) - redis_before
        postgresql_s = sum(
            used - postgresql_before.get(pid, 0.0) for pid, used in backend_cpu(monitor).items()
        )
        monitor.close()

        failed = FailedJobRegistry(queue=get_queue()).count
        with db.engine.connect() as connection:
            groups = connection.execute(
                text("SELECT count(*) FROM messages WHERE type = 'OUTBOUND'")
            ).scalar_one()
            unanswered = connection.execute(
                text("SELECT count(*) FROM messages WHERE type = 'INBOUND' AND reply_id IS NULL")
            ).scalar_one()
        redis_client.client.close()
        db.engine.dispose()
    if failed or unanswered or groups != args.conversations:
        raise SystemExit(
            f"bench: {groups} groups answered of {args.conversations}, {unanswered} messages"
            f" unanswered, {failed} failed jobs"
        )
    per_group = 1000 / groups
    figures = {
        "label": args.label or str(checkout),
        "code": str(Path(service.__file__).resolve().parent.parent),
        "commit": git_head(checkout),
        "groups": groups,
        "jobs": jobs,
        "worker_ms": worker_s * per_group,
        "postgresql_ms": postgresql_s * per_group,
        "redis_ms": redis_s * per_group,
        "wall_s": wall_s,
    }
    figures["total_ms"] = figures["worker_ms"] + figures["postgresql_ms"] + figures["redis_ms"]
    return figures


def backend_cpu(monitor):
    """{pid: CPU seconds (user + system)} of the database's client backends, this
    monitoring connection's own excepted."""
    with monitor.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
        pids = [pid for (pid,) in cursor.fetchall()]
    ticks = os.sysconf("SC_CLK_TCK")
    used = {}
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:  # the backend ended meanwhile
            continue
        # Fields after the command name, which may hold spaces: utime and stime are the
        # 14th and 15th of the line.
        fields = stat.rsplit(")", 1)[1].split()
        used[pid] = (int(fields[11]) + int(fields[12])) / ticks
    return used


def redis_cpu(client):
    """CPU seconds (user + system) the Redis server used since it started."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def git_head(checkout):
    done = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or None


@contextlib.contextmanager
def private_redis(port):
    """A `redis-server` of the run's own on 127.0.0.1:`port`, without persistence; yields its
    URL and stops it on exit."""
    import redis

    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("bench: redis-server not found")
    directory = tempfile.mkdtemp(prefix="bench-flush-redis-")
    command = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    process = subprocess.Popen(
        [*command, "--appendonly", "no", "--dir", directory], stdout=subprocess.DEVNULL
    )
    try:
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"bench: redis-server did not start on {port}") from None
                time.sleep(0.05)
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
