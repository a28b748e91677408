"""The fault suite's stage: private PostgreSQL and Redis behind stall proxies, the service as
real processes against them, a supervisor, and runs of bursty traffic with faults injected.
"""

import os
import re
import signal
import subprocess
import threading
import time
from contextlib import contextmanager

import psycopg2
import requests

from tests.faults import checker
from tests.faults.deps import (
    PrivatePostgres,
    PrivateRedis,
    StallProxy,
    drop_stale_clusters,
    wait_until,
)
from tests.faults.traffic import Sender, Traffic
from tests.stack import BIN, ROOT, LiveStack, stack_env

FULL = os.environ.get("FAULTS_FULL", "") not in ("", "0")
# Under `pytest -n` (make test) each worker has a directory of its own: two lanes of the suite
# run at once, each with its own stage.
RUNTIME = ROOT / "instance" / "faults" / os.environ.get("PYTEST_XDIST_WORKER", "")
# Figures of every run of this session, for the summary (conftest) and docs/reliability.md.
RESULTS = {}
# The key of a lane's rows in its xdist worker's output.
RESULT_ROWS = "fault_result_rows"
RESULTS_HEADER = (
    "| fault | accepted | once | twice | never | merged/split | max lateness "
    "(outside faults) | 5xx | slowest request | verdict |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


def result_rows(results):
    """The summary table's rows (markdown) of {fault name: checker report}."""
    rows = []
    for name, r in results.items():
        verdict = "; ".join(r.problems()) or "clean"
        rows.append(
            f"| {name} | {r.accepted} | {r.answered_once} | {r.answered_twice} | {r.never} | "
            f"{r.merged}/{r.split} | {r.max_lateness:.2f} s ({r.max_lateness_outside:.2f} s) "
            f"| {r.status_5xx} | {r.slowest:.2f} s | {verdict} |"
        )
    return rows


def write_results(terminalreporter, rows):
    """Print the fault suite's figures and keep them in instance/faults/results[-full].md."""
    text = "\n".join([RESULTS_HEADER, *rows])
    directory = ROOT / "instance" / "faults"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / ("results-full.md" if FULL else "results.md")).write_text(text + "\n")
    terminalreporter.write_sep("-", "fault suite figures (instance/faults/results*.md)")
    terminalreporter.write_line(text)


class FaultEnv:
    """Everything a fault needs, started once per session."""

    def __init__(self):
        RUNTIME.mkdir(parents=True, exist_ok=True)
        self.pg = PrivatePostgres()
        self.redis = PrivateRedis(RUNTIME / "redis")
        self.pg_proxy = self.redis_proxy = self.stack = None
        self.exits = []  # (wall clock, process name, exit code): deaths nobody asked for
        self.dirty = False  # the last run failed: the next one starts from fresh processes
        self._supervising = threading.Event()

    # --- life cycle --------------------------------------------------------------------

    def start(self):
        drop_stale_clusters()
        self.pg.create()
        self.redis.start()
        self.pg_proxy = StallProxy(self.pg.port, "pg-proxy")
        self.redis_proxy = StallProxy(self.redis.port, "redis-proxy")
        # Only what the suite sets: no web, pool, queue or metrics setting of the shell's, and
        # the contract's windows at their defaults.
        strip = ("WEB_", "DB_", "RQ_", "PROMETHEUS_", "QUIET_", "HOLD_", "RECONCILE_", "WEBHOOK_")
        env = stack_env(
            self.pg.url(self.pg_proxy.port),
            f"redis://127.0.0.1:{self.redis_proxy.port}/0",
            strip=strip,
        )
        self._start_service(env, RUNTIME / "logs")

    def _start_service(self, env, logs):
        """Migrate, start web, a worker and a scheduler with `env`, logging to `logs`, and
        supervise them."""
        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / "migrate.log", "ab") as log:
            subprocess.run(
                [str(BIN / "flask"), "db", "upgrade"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=True,
                timeout=120,
            )
        self.stack = LiveStack(env, logs)
        self.stack.start(workers=1, schedulers=1)
        self.wait_worker()
        self._supervising.set()
        threading.Thread(target=self._supervise, daemon=True).start()

    def stop(self):
        self._supervising.clear()
        if self.stack:
            self.stack.stop()
        for proxy in (self.pg_proxy, self.redis_proxy):
            if proxy:
                proxy.close()
        self.redis.kill()
        self.pg.drop()

    def _supervise(self):
        """Start again any process that died on its own, as a supervisor would, and note it."""
        while self._supervising.is_set():
            for name, code in self.stack.restart_exited().items():
                self.exits.append((time.time(), name, code))
            time.sleep(1.0)

    # --- probes ------------------------------------------------------------------------

    def db(self):
        """A connection straight to the private database (not through the proxy)."""
        conn = psycopg2.connect(self.pg.dsn, connect_timeout=2)
        conn.autocommit = True
        return conn

    def sql(self, query, args=None):
        conn = self.db()
        try:
            with conn.cursor() as cur:
                cur.execute(query, args)
                return cur.fetchall()
        finally:
            conn.close()

    def redis_client(self):
        """A client straight to the private Redis (not through the proxy)."""
        return self.redis.client()

    def worker_registered(self, pid):
        client = self.redis_client()
        for key in client.keys("rq:worker:*"):
            if client.type(key) == b"hash" and client.hget(key, "pid") == str(pid).encode():
                return True
        return False

    def wait_worker(self, timeout=30):
        """Until every worker process has registered with RQ."""
        for process in self.stack.workers:
            wait_until(lambda p=process: self.worker_registered(p.pid), timeout, "the worker")

    def readyz(self, timeout=15.0):
        """(status or None, seconds) of GET /readyz."""
        started = time.monotonic()
        try:
            status = requests.get(self.stack.base_url + "/readyz", timeout=timeout).status_code
        except requests.RequestException:
            status = None
        return status, time.monotonic() - started

    def events_total(self):
        """The sum of webhook_events_total over its labels in /metrics, or None."""
        try:
            response = requests.get(self.stack.base_url + "/metrics", timeout=5)
        except requests.RequestException:
            return None
        if response.status_code != 200:
            return None
        found = re.findall(r"^webhook_events_total\{[^}]*\} ([0-9.e+]+)$", response.text, re.M)
        return sum(float(v) for v in found)

    def log_size(self, name):
        path = self.stack.logs / f"{name}.log"
        return path.stat().st_size if path.exists() else 0

    def log_since(self, name, offset):
        with open(self.stack.logs / f"{name}.log", "rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    # --- faults ------------------------------------------------------------------------

    def kill(self, name, sig=signal.SIGKILL):
        return self.stack.kill(name, sig)

    def restart(self, name):
        self.stack.spawn(name)

    def stop_postgres(self):
        self.pg.stop()

    def start_postgres(self):
        self.pg.start()

    def restart_redis(self, down=2.0):
        """Kill Redis, leave it down `down` seconds, start it again empty."""
        self.redis.kill()
        time.sleep(down)  # the fault itself: Redis is away this long
        self.redis.start()

    def flushall(self):
        self.redis_client().flushall()

    # --- between runs ------------------------------------------------------------------

    def heal(self):
        """Leave the stage as a fresh one: dependencies up, proxies flowing, and after a
        failed run (or a death) fresh worker and scheduler processes."""
        self.pg_proxy.resume()
        self.redis_proxy.resume()
        if not self.redis.answers():
            self.redis.start()
        try:
            self.pg.answers()
        except psycopg2.Error:
            self.pg.start()
        if self.dirty or self.stack.exited():
            # A failed run may leave anything behind, down to a web process whose stale
            # transactions hold row locks: start every process afresh.
            with self.stack.lock:
                names = list(self.stack.processes)
            for name in names:  # web at once; worker and scheduler clean up (lock, registry)
                self.kill(name, signal.SIGKILL if name == "web" else signal.SIGTERM)
            self.stack.start(workers=1, schedulers=1)
            self.wait_worker()
        self.dirty = False


class Run:
    """One fault's run: traffic over `conversations` conversations, faults noted as windows,
    then the check. Offsets (`at`) are seconds since the traffic started."""

    def __init__(self, env, name, conversations=30, seed=None):
        self.env = env
        self.name = name
        self.sender = Sender(env.stack.base_url)
        self.conversation_ids = []
        self.windows = []
        self.notes = []
        self.count = conversations
        self.seed = seed if seed is not None else sum(map(ord, name))
        self.t0 = None
        self.traffic = None
        self.watcher = None
        self.report = None

    def begin(self):
        self.env.heal()
        for _ in range(self.count):
            self.conversation_ids.append(self.sender.open())
        self.watcher = checker.ReplyWatcher(self.env.pg.dsn, self.conversation_ids).start()
        self.traffic = Traffic(self.sender, list(self.conversation_ids), self.seed)
        self.t0 = time.time()
        self.traffic.start()
        return self

    def conversation(self):
        """A conversation of the run outside the random traffic (a scenario's own)."""
        conversation_id = self.sender.open()
        self.conversation_ids.append(conversation_id)
        return conversation_id

    def elapsed(self):
        return time.time() - self.t0

    def at(self, offset):
        """Wait for the next step of the scenario: the scenario itself is about time."""
        delay = self.t0 + offset - time.time()
        if delay > 0:
            time.sleep(delay)

    @contextmanager
    def fault(self, name):
        """Note a fault's window: from entering the block to its repair at the end."""
        start = time.time()
        try:
            yield
        finally:
            self.windows.append(checker.Window(name, start, time.time()))

    def finish(self, settle=1.5):
        """Stop the traffic, wait until the stack has answered (or the lateness bound has
        passed), and check the database. Returns the Report."""
        self.traffic.stop()
        self.sender.close()
        accepted = self.sender.accepted(set(self.conversation_ids))
        last = max((a.answered for a in self.sender.attempts), default=time.time())
        ends = [w.end + checker.AFTER_FAULT for w in self.windows]
        deadline = max([last + 5 + checker.ON_TIME, *ends]) + 5
        if checker.wait_answered(self.env.pg.dsn, self.conversation_ids, accepted, deadline):
            time.sleep(settle)  # a second reply, if any, would come now: watch for it
        self.watcher.stop()
        inbound, replies = checker.load(self.env.pg.dsn, self.conversation_ids)
        report = checker.evaluate(
            inbound, replies, accepted, self.windows, self.sender.attempts, self.watcher.seen
        )
        report.exited = [name for at, name, _ in self.env.exits if at >= self.t0]
        report.notes = self.notes
        self.report = report
        self.env.dirty = bool(report.problems())
        RESULTS[self.name] = report
        return report

    def fault_end(self):
        return max(w.end for w in self.windows)

    def answer_times(self, conversation_id):
        """[(listed ids, reply stamp in wall clock seconds)] of a conversation, in order."""
        rows = self.env.sql(
            "SELECT content, received_at FROM messages WHERE conversation_id = %s"
            " AND type = 'OUTBOUND' ORDER BY received_at, id",
            (conversation_id,),
        )
        return [(checker.listed_ids(content), at.timestamp()) for content, at in rows]


def describe(report):
    lines = [report.summary(), *report.problems(), *report.notes]
    return "\n".join(lines)
