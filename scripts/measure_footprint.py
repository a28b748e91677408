#!/usr/bin/env python3
"""Measure what the service costs per message and per open conversation: Redis memory,
database bytes and connections per process, on the production stack driven over HTTP.

Starts a private redis-server (no persistence, so its memory is the service's alone) and the
stack on a PostgreSQL database whose schema it rebuilds, then, once with the template's
replies and once with delivery and generation on (the reference receiver and bot):
  1. web only (gunicorn with gunicorn.conf.py and the default settings; no scheduler and no
     worker, so every group stays open): N conversations; then, in chunks, a first message to
     each (a new open group) and a second one (a further message of that group); then H
     messages for unknown conversations (held). Redis: used_memory (less the clients'
     buffers) before and after each step, MEMORY USAGE of every key once the groups are
     open, and the commands run (INFO commandstats) and the server's CPU (INFO cpu).
     Database: pg_total_relation_size of each table (indexes and TOAST included) after
     each step;
  2. the scheduler and the workers start and answer every group (deliver and generate);
     Redis commands and CPU again, per group;
  3. the stack stops; VACUUM FULL gives the compacted sizes (also after step 1's
     conversations and messages).
Throughout, each process's PostgreSQL and Redis connections are counted from its sockets
(/proc: established TCP connections to the database's and Redis's ports), every 0.25 s,
with the totals of pg_stat_activity and CLIENT LIST beside them.

    .venv/bin/python -m scripts.measure_footprint              # the figures in docs/scaling.md
    .venv/bin/python -m scripts.measure_footprint --groups 500 --outbound off   # a quick look

Needs PostgreSQL over TCP (default database `footprint`, created if missing and reset) and
`redis-server` on the PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a file: scripts/ is on the path, the root is not
    sys.path.insert(0, str(ROOT))

import psycopg2  # noqa: E402
import redis  # noqa: E402

from scripts import bench  # noqa: E402
from scripts.receiver import new_secret  # noqa: E402
from scripts.replay.client import Client, ClientPool  # noqa: E402
from scripts.replay.events import new_conversation_event, new_message_event  # noqa: E402
from service.infra.buffer import keys as buffer_keys  # noqa: E402

BIN = Path(sys.executable).parent
LOGS = ROOT / "instance" / "footprint-logs"
CONTENT = "Olá, preciso de ajuda com o meu pedido 12345"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
ESTABLISHED = "01"
WARM_UP_GROUPS = 1
# The commands this script sends (its measurements), not counted as the service's.
OWN_COMMANDS = {"client", "info", "memory", "scan", "type", "zcard", "ping", "flushdb"}


@dataclass(frozen=True)
class CommandCount:
    calls: int
    usec: int

    def __sub__(self, other):
        return CommandCount(self.calls - other.calls, self.usec - other.usec)


def tcp_peers(tables=("/proc/net/tcp", "/proc/net/tcp6")):
    """{socket inode: remote port} of this host's established TCP connections."""
    peers = {}
    for table in tables:
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == ESTABLISHED:
                peers[int(fields[9])] = int(fields[2].rsplit(":", 1)[1], 16)
    return peers


def socket_inodes(pid):
    """Inodes of the sockets a process holds open."""
    found = set()
    try:
        descriptors = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return found
    for fd in descriptors:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(int(target[len("socket:[") : -1]))
    return found


def connections_to(pid, peers, port):
    """How many established TCP connections `pid` holds to `port` (`peers`: tcp_peers())."""
    return sum(1 for inode in socket_inodes(pid) if peers.get(inode) == port)


def key_pattern(key):
    """A Redis key with its ids replaced by `*` (conv:{*}:buffer)."""
    return UUID.sub("*", key.decode() if isinstance(key, bytes) else key)


def per(delta, count):
    """Bytes per unit, rounded; None when nothing was counted."""
    return round(delta / count) if count else None


class Sampler(threading.Thread):
    """Peak PostgreSQL and Redis connections of each process of the stack, and of the
    servers' own counts (pg_stat_activity, CLIENT LIST), sampled until stopped."""

    def __init__(self, stack, roles, pg, redis_client, pg_port, redis_port):
        super().__init__(daemon=True)
        self.stack, self.roles = stack, roles
        self.pg, self.redis = pg, redis_client
        self.pg_port, self.redis_port = pg_port, redis_port
        self.peak = {}  # pid -> [role, postgresql, redis]
        self.totals = {"processes": [0, 0], "servers": [0, 0]}
        self.samples = 0
        self.running = True
        self.lock = threading.Lock()

    def role_of(self, pid):
        if pid in self.roles:
            return self.roles[pid]
        parent = int(Path(f"/proc/{pid}/stat").read_text().split(") ")[1].split()[1])
        return self.roles.get(parent, "?") + " (child)"

    def sample(self):
        with self.lock:
            peers = tcp_peers()
            pg_total = redis_total = 0
            for pid in self.stack.pids():
                try:
                    role = self.role_of(pid)
                except OSError:
                    continue
                pg = connections_to(pid, peers, self.pg_port)
                rd = connections_to(pid, peers, self.redis_port)
                pg_total, redis_total = pg_total + pg, redis_total + rd
                peak = self.peak.setdefault(pid, [role, 0, 0])
                peak[1], peak[2] = max(peak[1], pg), max(peak[2], rd)
            with self.pg.cursor() as cursor:
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND backend_type = 'client backend'"
                )
                pg_server = cursor.fetchone()[0]
            redis_server = len(self.redis.client_list())
            # Not this script's own connections.
            pg_server -= connections_to(os.getpid(), peers, self.pg_port)
            redis_server -= connections_to(os.getpid(), peers, self.redis_port)
            for name, values in (
                ("processes", (pg_total, redis_total)),
                ("servers", (pg_server, redis_server)),
            ):
                self.totals[name] = [
                    max(a, b) for a, b in zip(self.totals[name], values, strict=True)
                ]
            self.samples += 1

    def run(self):
        while self.running:
            self.sample()
            time.sleep(0.25)

    def stop(self):
        self.running = False
        self.join()

    def by_role(self):
        """{role: {"processes", "postgresql", "redis"}}: the peak of one process of the role."""
        roles = {}
        for role, pg, rd in self.peak.values():
            entry = roles.setdefault(role, {"processes": 0, "postgresql": 0, "redis": 0})
            entry["processes"] += 1
            entry["postgresql"] = max(entry["postgresql"], pg)
            entry["redis"] = max(entry["redis"], rd)
        return roles


class Run:
    """One measurement on a fresh schema and an empty Redis; `outbound`: delivery and
    generation on."""

    def __init__(self, args, redis_port, outbound):
        self.args, self.outbound = args, outbound
        self.redis_url = f"redis://127.0.0.1:{redis_port}/0"
        self.redis = redis.Redis.from_url(self.redis_url)
        self.redis_port = redis_port
        self.pg_port = urlsplit(args.database_url).port or 5432
        self.helpers = []
        self.roles = {}
        self.sizes = {}  # step -> {table: bytes}
        self.memory = {}  # what -> (bytes, units)
        self.keys = {}
        self.counts = {}
        self.commands = {}  # what -> (CommandCount, units)

    # -- the stack --------------------------------------------------------------------------

    def env(self):
        env = {
            **os.environ,
            "DATABASE_URL": self.args.database_url,
            "REDIS_URL": self.redis_url,
            "PORT": str(self.args.port),
            "HOST": "127.0.0.1",
            "FLASK_APP": "wsgi",
            "LOG_LEVEL": "WARNING",
        }
        for name in ("REPLY_WEBHOOK_URL", "REPLY_GENERATOR_URL"):
            env.pop(name, None)
        if self.outbound:
            secret = new_secret()
            receiver = self.helper("receiver", "--port", "0", "--json", "--secret", secret)
            bot = self.helper("bot", "--port", "0", "--json")
            env.update(
                REPLY_WEBHOOK_URL=receiver, REPLY_WEBHOOK_SECRET=secret, REPLY_GENERATOR_URL=bot
            )
        return env

    def helper(self, module, *args):
        """Start scripts.<module> (receiver, bot) on a free port; returns its URL."""
        process = subprocess.Popen(
            [sys.executable, "-m", f"scripts.{module}", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.helpers.append(process)
        url = json.loads(process.stdout.readline())["url"]
        threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()
        return url

    def spawn(self, role, *command):
        LOGS.mkdir(parents=True, exist_ok=True)
        with open(LOGS / f"{role}-{len(self.stack.processes)}.log", "wb") as log:
            process = subprocess.Popen(
                command, cwd=ROOT, env=self.stack.env, stdout=log, stderr=log
            )
        self.stack.processes.append(process)
        self.roles[process.pid] = role

    def wait_web(self, base):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if bench.http("GET", base + "/healthz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"gunicorn did not start; see {LOGS}/")

    # -- measuring --------------------------------------------------------------------------

    def table_sizes(self):
        with self.pg.cursor() as cursor:
            cursor.execute(
                "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = 'public' AND c.relkind = 'r'"
            )
            return dict(cursor.fetchall())

    def snapshot(self, step, compact=False):
        if compact:
            # The service's tables only, by name: a database-wide VACUUM FULL also rewrites
            # the shared catalogs, and waiting for their lock stalls every login to the server.
            tables = ", ".join(f'"{name}"' for name in self.table_sizes())
            with self.pg.cursor() as cursor:
                cursor.execute(f"VACUUM (FULL, ANALYZE) {tables}")
        self.sizes[step] = self.table_sizes()

    def used_memory(self):
        """Bytes Redis has allocated (INFO used_memory), less its clients' buffers, which
        follow the traffic of the moment, not what is stored."""
        stats = self.redis.memory_stats()
        return stats["total.allocated"] - stats["clients.normal"]

    def count(self, sql):
        with self.pg.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchone()[0]

    def post(self, events, expected):
        """Post the events from `--concurrency` threads; every answer must be `expected`."""
        with ThreadPoolExecutor(self.args.concurrency) as pool:
            statuses = list(pool.map(lambda e: self.clients.get().post_event(e).status, events))
        wrong = [s for s in statuses if s != expected]
        if wrong:
            raise SystemExit(f"{len(wrong)} answers were not {expected}: {sorted(set(wrong))}")

    def buffer_usage(self, conversations):
        """MEMORY USAGE of the buffer keys (the sorted set and `armed`) of these conversations."""
        with self.redis.pipeline(transaction=False) as pipe:
            for conversation in conversations:
                for key in buffer_keys(conversation):
                    pipe.memory_usage(key, samples=0)
            return sum(size or 0 for size in pipe.execute())

    def command_stats(self):
        """Redis commands run so far, this script's own left out (a script's EVALSHA and each
        command it runs count one each), and the server's CPU time (µs, this script's small
        share included)."""
        calls = 0
        for name, stats in self.redis.info("commandstats").items():
            if name.split("|")[0].removeprefix("cmdstat_") not in OWN_COMMANDS:
                calls += stats["calls"]
        cpu = self.redis.info("cpu")
        return CommandCount(calls, round((cpu["used_cpu_user"] + cpu["used_cpu_sys"]) * 1e6))

    def key_usage(self):
        """{key pattern: [keys, bytes (MEMORY USAGE), members of sorted sets]}."""
        found = {}
        for key in self.redis.scan_iter(count=1000):
            entry = found.setdefault(key_pattern(key), [0, 0, 0])
            entry[0] += 1
            entry[1] += self.redis.memory_usage(key, samples=0) or 0
            if self.redis.type(key) == b"zset":
                entry[2] += self.redis.zcard(key)
        return found

    def wait_for(self, what, sql, expected):
        deadline = time.monotonic() + self.args.drain_seconds
        while (got := self.count(sql)) != expected:
            if time.monotonic() > deadline:
                raise SystemExit(f"{what}: {got} of {expected} after {self.args.drain_seconds} s")
            time.sleep(0.5)

    def run(self):
        args = self.args
        groups, held = args.groups, args.held
        prepare_database(args.database_url)
        self.redis.flushdb()
        env = self.env()
        bench.sh(str(BIN / "flask"), "db", "upgrade", env=env, capture_output=True)
        self.pg = psycopg2.connect(args.database_url)
        self.pg.autocommit = True
        with self.pg.cursor() as cursor:  # never queue behind a lock of anyone else's
            cursor.execute("SET lock_timeout = '10s'")
        self.stack = bench.Stack(env, 0)
        base = f"http://127.0.0.1:{args.port}"
        self.clients = ClientPool(lambda: Client(base))
        self.spawn("web", str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app")
        sampler = None
        try:
            self.wait_web(base)
            sampler_pg = psycopg2.connect(args.database_url)
            # Autocommit: in a transaction, pg_stat_activity would stay its first snapshot.
            sampler_pg.autocommit = True
            sampler = Sampler(
                self.stack, self.roles, sampler_pg, self.redis, self.pg_port, self.redis_port
            )
            sampler.start()
            self.warm_up()
            groups, held = groups + WARM_UP_GROUPS, held + self.warm_up_held
            self.web_only(args.groups, args.held)
            commands = self.command_stats()
            for role, command in self.workers():
                self.spawn(role, *command)
            self.wait_for(
                "replies", "SELECT count(*) FROM messages WHERE type = 'OUTBOUND'", groups
            )
            if self.outbound:
                self.wait_for(
                    "generations",
                    "SELECT count(*) FROM generations WHERE status = 'stored'",
                    groups,
                )
                self.wait_for(
                    "deliveries",
                    "SELECT count(*) FROM deliveries WHERE status = 'delivered'",
                    groups,
                )
            self.wait_for(
                "held messages expired",
                "SELECT count(*) FROM held_messages WHERE status = 'EXPIRED'",
                held,
            )
            sampler.sample()
            # Groups answered, held messages expired, and the periodic jobs meanwhile.
            self.commands["scheduler and workers, per group"] = (
                self.command_stats() - commands,
                groups,
            )
        finally:
            if sampler is not None:
                sampler.stop()
            self.stack.stop()
            for process in self.helpers:
                process.terminate()
                process.wait(timeout=10)
        self.snapshot("answered")
        self.snapshot("answered, compacted", compact=True)
        self.counts = {
            "conversations": args.groups,
            "messages": 2 * args.groups,
            "held": args.held,
            # Answered and expired after the warm-up: its rows too.
            "replies": groups,
            "expired": held,
        }
        self.connections = sampler.by_role()
        self.connection_totals = sampler.totals
        self.samples = sampler.samples
        self.pg.close()
        return self.report()

    def warm_up(self):
        """A group and two held messages per client thread, at the full concurrency, before
        anything is measured: the Lua scripts are loaded, the metrics hash has its fields and
        the web processes have opened the connections this load needs."""
        self.warm_up_held = 2 * self.args.concurrency
        for _ in range(WARM_UP_GROUPS):
            conversation = str(uuid.uuid4())
            self.post([new_conversation_event(conversation)], 201)
            self.post([new_message_event(conversation, str(uuid.uuid4()), CONTENT)], 202)
            self.post([new_message_event(conversation, str(uuid.uuid4()), CONTENT)], 202)
        self.post(self.held_events(self.warm_up_held), 202)

    def held_events(self, count):
        """Messages for conversations that do not exist (yet)."""
        return [
            new_message_event(str(uuid.uuid4()), str(uuid.uuid4()), CONTENT) for _ in range(count)
        ]

    def web_only(self, groups, held):
        """Conversations, open groups and held messages with only gunicorn running."""
        self.snapshot("empty", compact=True)
        conversations = [str(uuid.uuid4()) for _ in range(groups)]
        before = self.used_memory()
        self.post([new_conversation_event(c) for c in conversations], 201)
        self.memory["conversation"] = (self.used_memory() - before, groups)
        self.snapshot("conversations")
        self.snapshot("conversations, compacted", compact=True)
        first = further = keys_first = keys_further = 0
        commands = self.command_stats()
        started = time.monotonic()
        for start in range(0, groups, self.args.chunk):
            chunk = conversations[start : start + self.args.chunk]
            before = self.used_memory()
            self.post([new_message_event(c, str(uuid.uuid4()), CONTENT) for c in chunk], 202)
            middle, usage = self.used_memory(), self.buffer_usage(chunk)
            self.post([new_message_event(c, str(uuid.uuid4()), CONTENT) for c in chunk], 202)
            first, further = first + middle - before, further + self.used_memory() - middle
            keys_first, keys_further = (
                keys_first + usage,
                keys_further + self.buffer_usage(chunk) - usage,
            )
        self.memory["open group (its first message)"] = (first, groups)
        self.memory["further message of an open group"] = (further, groups)
        self.buffer_keys = {
            "open group (its first message)": per(keys_first, groups),
            "further message of an open group": per(keys_further, groups),
        }
        self.keys = self.key_usage()
        buffers = self.keys.get("conv:{*}:buffer", [0, 0, 0])
        expected = groups + WARM_UP_GROUPS
        if buffers[0] != expected or buffers[2] != 2 * expected:
            raise SystemExit(
                f"{buffers[0]} buffers holding {buffers[2]} messages, not {expected} holding "
                f"{2 * expected}: keys expired (65 s after their last write; the messages took "
                f"{time.monotonic() - started:.0f} s) or a second message missed its group's "
                "window; try a smaller --groups or --chunk"
            )
        self.commands["web, per message"] = (self.command_stats() - commands, 2 * groups)
        self.snapshot("messages")
        before = self.used_memory()
        self.post(self.held_events(held), 202)
        self.memory["held message"] = (self.used_memory() - before, held)
        self.snapshot("held")
        self.snapshot("held, compacted", compact=True)

    def workers(self):
        flask = str(BIN / "flask")
        yield "scheduler", (flask, "scheduler")
        for _ in range(self.args.rq_workers):
            yield "worker", (flask, "worker")
        if self.outbound:
            yield "delivery-worker", (flask, "worker", "--queue", "deliveries")
            yield "generation-worker", (flask, "worker", "--queue", "generations")

    # -- the report -------------------------------------------------------------------------

    def growth(self, table, before, after, units):
        return per(self.sizes[after][table] - self.sizes[before][table], units)

    def report(self):
        n = self.counts
        # (row, table, its count, (from, to) as written; its count, (from, to) compacted).
        # Each "as written" step starts from a compacted table, as the next step's rows land
        # in whatever free space the table has.
        rows = [
            ("conversation", "conversations", n["conversations"], ("empty", "conversations")),
            ("message", "messages", n["messages"], ("conversations, compacted", "messages")),
            ("held message", "held_messages", n["held"], ("messages", "held")),
            ("reply", "messages", n["replies"], ("held, compacted", "answered")),
            # The flush rewrites the row (updated_at): no new row, maybe a page.
            (
                "reply: its conversation",
                "conversations",
                n["replies"],
                ("held, compacted", "answered"),
            ),
            (
                "held message, expired",
                "held_messages",
                n["expired"],
                ("held, compacted", "answered"),
            ),
        ]
        compacted = {
            "conversation": (n["conversations"], ("empty", "conversations, compacted")),
            "message": (n["messages"], ("conversations, compacted", "held, compacted")),
            "held message": (n["held"], ("empty", "held, compacted")),
            "reply": (n["replies"], ("held, compacted", "answered, compacted")),
            "reply: its conversation": (n["replies"], ("held, compacted", "answered, compacted")),
            "held message, expired": (n["held"], ("empty", "answered, compacted")),
        }
        if self.outbound:
            for what, table in (("delivery", "deliveries"), ("generation", "generations")):
                rows.append((what, table, n["replies"], ("held, compacted", "answered")))
                compacted[what] = (n["replies"], ("empty", "answered, compacted"))
        database = [
            {
                "row": what,
                "table": table,
                "count": units,
                "bytes_as_written": self.growth(table, *written, units),
                "bytes_compacted": self.growth(table, *compacted[what][1], compacted[what][0]),
            }
            for what, table, units, written in rows
        ]
        groups = n["replies"]  # the warm-up's group is open too when the keys are read
        keys = {
            pattern: {
                "keys": count,
                "bytes": total,
                "members": members,
                "bytes_per_group": per(total, groups),
            }
            for pattern, (count, total, members) in sorted(self.keys.items())
        }
        return {
            "outbound": self.outbound,
            "groups": n["conversations"],
            "held": n["held"],
            "redis_used_memory_per_unit": {
                what: per(delta, units) for what, (delta, units) in self.memory.items()
            },
            "redis_buffer_keys_per_unit": self.buffer_keys,
            "redis_commands_per_unit": {
                what: {"calls": round(c.calls / units, 2), "cpu_us": round(c.usec / units, 1)}
                for what, (c, units) in self.commands.items()
            },
            "redis_keys_with_open_groups": keys,
            "database": database,
            "table_sizes": self.sizes,
            "connections_peak_per_process": self.connections,
            "connections_peak_totals": {
                "processes_postgresql_redis": self.connection_totals["processes"],
                "pg_stat_activity_client_list": self.connection_totals["servers"],
                "samples": self.samples,
            },
        }


def prepare_database(url):
    """Create the database if needed and empty its `public` schema (the migrations rebuild
    it). Unlike scripts/bench.py, no CHECKPOINT: sizes do not depend on one."""
    parts = urlsplit(url)
    admin = psycopg2.connect(parts._replace(path="/postgres").geturl())
    admin.autocommit = True
    name = parts.path.lstrip("/")
    with admin.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if cursor.fetchone() is None:
            cursor.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    connection = psycopg2.connect(url)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    connection.close()


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_redis(port):
    """A private redis-server without persistence; returns the process once it answers."""
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            client.ping()
            return process
        except redis.exceptions.ConnectionError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"redis-server did not start on port {port}")


def _bytes(value):
    """A per-unit figure, or n/a when there were no units (--held 0, say)."""
    return f"{value:>8} B" if value is not None else f"{'n/a':>8}"


def print_report(report):
    mode = "delivery and generation on" if report["outbound"] else "template replies"
    print(f"\n== {mode}: {report['groups']} groups of 2 messages, {report['held']} held ==")
    print("Redis, INFO used_memory growth per unit:")
    for what, value in report["redis_used_memory_per_unit"].items():
        print(f"  {what:<40} {_bytes(value)}")
    print("Redis, MEMORY USAGE of a conversation's buffer keys (sorted set and armed):")
    for what, value in report["redis_buffer_keys_per_unit"].items():
        print(f"  {what:<40} {_bytes(value)}")
    print("Redis commands (INFO commandstats) and the server's CPU (INFO cpu):")
    for what, value in report["redis_commands_per_unit"].items():
        print(f"  {what:<40} {value['calls']:>8} calls {value['cpu_us']:>7} µs CPU")
    print("Redis keys while the groups are open (MEMORY USAGE ... SAMPLES 0):")
    for pattern, entry in report["redis_keys_with_open_groups"].items():
        print(
            f"  {pattern:<40} {entry['keys']:>6} keys {entry['members']:>6} members "
            f"{entry['bytes']:>10} B  {entry['bytes_per_group']:>6} B per group"
        )
    print("Database, pg_total_relation_size growth per row (table + indexes + TOAST):")
    print(f"  {'row':<40} {'table':<14} {'rows':>6} {'as written':>11} {'compacted':>10}")
    for row in report["database"]:
        print(
            f"  {row['row']:<40} {row['table']:<14} {row['count']:>6} "
            f"{row['bytes_as_written']!s:>11} {row['bytes_compacted']!s:>10}"
        )
    print("Connections, peak of one process of each role:")
    print(f"  {'role':<24} {'processes':>9} {'PostgreSQL':>10} {'Redis':>6}")
    for role, entry in sorted(report["connections_peak_per_process"].items()):
        print(f"  {role:<24} {entry['processes']:>9} {entry['postgresql']:>10} {entry['redis']:>6}")
    totals = report["connections_peak_totals"]
    print(
        "  peak totals: processes' sockets {} / {}, pg_stat_activity / CLIENT LIST {} / {} "
        "({} samples)".format(
            *totals["processes_postgresql_redis"],
            *totals["pg_stat_activity_client_list"],
            totals["samples"],
        )
    )


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/footprint")
    parser.add_argument("--redis-port", type=int, default=0, help="private Redis (0: a free one)")
    parser.add_argument("--port", type=int, default=18100, help="gunicorn's port")
    parser.add_argument("--groups", type=int, default=2000, help="conversations, one group each")
    parser.add_argument("--held", type=int, default=1000, help="messages held")
    parser.add_argument("--chunk", type=int, default=250, help="groups per step of messages")
    parser.add_argument("--concurrency", type=int, default=32, help="client threads")
    parser.add_argument("--rq-workers", type=int, default=1)
    parser.add_argument("--drain-seconds", type=float, default=180)
    parser.add_argument("--outbound", choices=("off", "on", "both"), default="both")
    parser.add_argument("--json", action="store_true", help="print the reports as JSON")
    args = parser.parse_args()

    port = args.redis_port or free_port()
    server = start_redis(port)
    reports = []
    try:
        for outbound in {"off": [False], "on": [True], "both": [False, True]}[args.outbound]:
            reports.append(Run(args, port, outbound).run())
            if not args.json:
                print_report(reports[-1])
    finally:
        server.terminate()
        server.wait(timeout=10)
    if args.json:
        print(json.dumps(reports, indent=2))
    else:
        print(
            "\nsummary:", json.dumps([{k: r[k] for k in r if k != "table_sizes"} for r in reports])
        )


if __name__ == "__main__":
    main()
