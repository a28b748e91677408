#!/usr/bin/env python3
"""Benchmark the whole stack on this machine: ingest throughput, reply timing, memory.

Starts gunicorn (production settings from gunicorn.conf.py), RQ workers and the scheduler
on a dedicated PostgreSQL database and Redis index, then:
  1. ingest: wrk posts NEW_MESSAGE events to existing conversations over 16 connections,
     and the CPU each part of the stack spent per request meanwhile is read from /proc;
  2. replies: `python3 -m scripts.replay load` starts 100 new groups per second for a minute and
     checks every group got exactly one reply, never early, and how late; the CPU each part
     of the stack spent per accepted message over the phase (replies included) is printed
     as `cpu ms per accepted message`;
  3. memory: RSS of every process of the stack, sampled during both phases; afterwards, the
     Redis buffer keys left over.

    python scripts/bench.py            # the figures in docs/benchmarks.md
    python scripts/bench.py --ingest-seconds 10 --load-seconds 20   # a quicker look
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

WRK_SCRIPT = """
math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
local conversations = {%s}
local function uuid()
  return (string.gsub("xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx", "[xy]", function(c)
    local v = (c == "x") and math.random(0, 15) or math.random(8, 11)
    return string.format("%%x", v)
  end))
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  local conversation = conversations[math.random(#conversations)]
  local body = '{"type":"NEW_MESSAGE","timestamp":"2025-06-04T14:20:05Z","data":{"id":"'
    .. uuid() .. '","conversation_id":"' .. conversation .. '","content":"Olá, benchmark"}}'
  return wrk.format(nil, nil, nil, body)
end
"""


def sh(*args, **kwargs):
    return subprocess.run(args, check=True, cwd=ROOT, **kwargs)


def prepare_database(url):
    """Create the benchmark database if needed and rebuild its schema with the migrations."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = urlunsplit(parts._replace(path="/postgres"))
    exists = subprocess.run(
        ["psql", admin, "-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{name}'"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not exists:
        sh("psql", admin, "-qc", f'CREATE DATABASE "{name}"')
    sh("psql", url, "-qc", "DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    # A checkpoint now, not one due in the middle of the run: the dirty pages of a previous run
    # (the first of a pair) were written out during the second one, and its tail was worse
    # whatever it measured. Needs a superuser or pg_checkpoint; skipped without one.
    subprocess.run(["psql", url, "-qc", "CHECKPOINT"], capture_output=True, check=False)


def http(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, None


class Stack:
    def __init__(self, env, workers, delivery_workers=0):
        self.env = env
        self.workers = workers
        # `flask worker --queue deliveries` processes (scripts/bench_delivery.py).
        self.delivery_workers = delivery_workers
        self.processes = []

    def start(self):
        logs = ROOT / "instance" / "bench-logs"
        logs.mkdir(parents=True, exist_ok=True)

        def spawn(name, *args):
            with open(logs / f"{name}.log", "wb") as log:
                self.processes.append(
                    subprocess.Popen(args, cwd=ROOT, env=self.env, stdout=log, stderr=log)
                )

        spawn("web", str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app")
        for i in range(self.workers):
            spawn(f"worker-{i}", str(BIN / "flask"), "worker")
        for i in range(self.delivery_workers):
            spawn(f"delivery-worker-{i}", str(BIN / "flask"), "worker", "--queue", "deliveries")
        spawn("scheduler", str(BIN / "flask"), "scheduler")
        base = f"http://127.0.0.1:{self.env['PORT']}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if http("GET", base + "/readyz")[0] == 200:
                    return base
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit("the stack did not become ready; see instance/bench-logs/")

    def pids(self, roots=None):
        """Every process of the stack (or under `roots`), gunicorn's workers included."""
        return descendants(roots or {p.pid for p in self.processes})

    def rss_mb(self):
        return rss_kb(self.pids()) / 1024

    def stop(self):
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def descendants(roots):
    """The processes `roots` (pids) and every process under them, from /proc."""
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().split(") ")[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo += children.get(pid, [])
    return found


def rss_kb(pids):
    """Resident memory of these processes added up (VmRSS), in KiB; gone ones count 0."""
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        total += int(match.group(1)) if match else 0
    return total


def cpu_ticks(pids):
    """User + system CPU of these processes so far, in clock ticks."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().split(") ")[1].split()
        except (OSError, IndexError):
            continue
        total += int(fields[11]) + int(fields[12])
    return total


def server_pids():
    """PostgreSQL and Redis server processes on this machine."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if command.startswith(b"postgres") or b"redis-server" in command:
                found.append(int(entry.name))
    return found


class CpuMeter:
    """CPU per request of each part of the stack over a phase, from /proc."""

    def __init__(self, stack):
        web, *jobs = (p.pid for p in stack.processes)
        self.groups = {
            "web": lambda: stack.pids({web}),
            "worker_and_scheduler": lambda: stack.pids(set(jobs)),
            "postgres_and_redis": server_pids,
        }
        self.start = {name: cpu_ticks(pids()) for name, pids in self.groups.items()}

    def per_request_ms(self, requests):
        tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
        return {
            name: round((cpu_ticks(pids()) - self.start[name]) * tick_ms / requests, 3)
            for name, pids in self.groups.items()
        }


class MemorySampler(threading.Thread):
    def __init__(self, stack):
        super().__init__(daemon=True)
        self.stack = stack
        self.peak = 0.0
        self.running = True

    def run(self):
        while self.running:
            self.peak = max(self.peak, self.stack.rss_mb())
            time.sleep(0.5)


def run_ingest(stack, base, seconds, connections, conversations):
    ids = []
    for i in range(conversations):
        conversation_id = f"00000000-0000-4000-8000-{i:012d}"
        status, _ = http(
            "POST",
            base + "/webhook/",
            {
                "type": "NEW_CONVERSATION",
                "timestamp": "2025-06-04T14:20:00Z",
                "data": {"id": conversation_id},
            },
        )
        assert status == 201, status
        ids.append(conversation_id)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT % ",".join(f'"{i}"' for i in ids))
    meter = CpuMeter(stack)
    output = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            script.name,
            base + "/webhook/",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(script.name)
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    cpu = meter.per_request_ms(requests)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    percentiles = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", output, re.M))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: (.*)", output)
    return {
        "requests_per_second": rps,
        "latency_p50": percentiles.get("50"),
        "latency_p99": percentiles.get("99"),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": errors.group(1) if errors else "none",
        "cpu_ms_per_request": cpu,
        "raw": output,
    }


def run_load(base, rate, seconds, conversations):
    output = subprocess.run(
        [
            sys.executable,
            "-m",
            "scripts.replay",
            "load",
            "--base-url",
            base,
            "--rate",
            str(rate),
            "--conversations",
            str(conversations),
            "--duration",
            str(seconds),
            "--messages-per-group",
            "2",
            "--gap",
            "1",
            "--concurrency",
            "32",
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    try:
        return json.loads(output.stdout)
    except json.JSONDecodeError:
        raise SystemExit(f"replay load failed:\n{output.stdout}\n{output.stderr}") from None


def add_stack_arguments(parser):
    """The options of the stack and its two phases (ingest, reply timing), shared with
    scripts/bench_delivery.py."""
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/bench")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/11")
    parser.add_argument("--port", type=int, default=18000)
    parser.add_argument(
        "--web-workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", 2))
    )
    parser.add_argument("--rq-workers", type=int, default=1)
    parser.add_argument("--ingest-seconds", type=int, default=30)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--load-seconds", type=int, default=60)
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--load-conversations", type=int, default=1000)
    parser.add_argument("--skip-ingest", action="store_true")


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_stack_arguments(parser)
    args = parser.parse_args()

    prepare_database(args.database_url)
    env = {
        **os.environ,
        "DATABASE_URL": args.database_url,
        "REDIS_URL": args.redis_url,
        "PORT": str(args.port),
        "HOST": "127.0.0.1",
        "FLASK_APP": "wsgi",
        "WEB_CONCURRENCY": str(args.web_workers),
        "LOG_LEVEL": "WARNING",
    }
    sh(str(BIN / "flask"), "db", "upgrade", env=env, capture_output=True)
    sh("redis-cli", "-u", args.redis_url, "flushdb", capture_output=True)
    stack = Stack(env, args.rq_workers)
    base = stack.start()
    sampler = MemorySampler(stack)
    sampler.start()
    report = {"web_workers": args.web_workers, "rq_workers": args.rq_workers}
    try:
        if not args.skip_ingest:
            ingest = run_ingest(stack, base, args.ingest_seconds, args.connections, 200)
            print(ingest.pop("raw"))
            report["ingest"] = ingest
            print("ingest:", json.dumps(ingest))
            time.sleep(8)  # let the ingest's own groups be answered before timing replies
        meter = CpuMeter(stack)
        load = run_load(base, args.rate, args.load_seconds, args.load_conversations)
        accepted = load["requests"]["by_status"].get("202", 0)
        if accepted:
            # Everything the stack spent to take the messages and answer their groups.
            load["cpu_ms_per_message"] = meter.per_request_ms(accepted)
        report["replies"] = load
        print("replies:", json.dumps(load))
        deadline = time.monotonic() + 30
        leftover = None
        while time.monotonic() < deadline:
            leftover = subprocess.run(
                ["redis-cli", "-u", args.redis_url, "--scan", "--pattern", "conv:*"],
                capture_output=True,
                text=True,
            ).stdout.split()
            if not leftover:
                break
            time.sleep(0.5)
        report["buffer_keys_left"] = len(leftover or [])
    finally:
        sampler.running = False
        report["peak_rss_mb"] = round(sampler.peak, 1)
        stack.stop()
    print("summary:", json.dumps({k: v for k, v in report.items() if k != "replies"}))
    lat = report["replies"].get("reply_lateness_s", {})
    print("reply lateness:", json.dumps(lat))
    if "cpu_ms_per_message" in report["replies"]:
        print("cpu ms per accepted message:", json.dumps(report["replies"]["cpu_ms_per_message"]))
    print_targets(report)


def milliseconds(wrk_value):
    """wrk's latency figure ('812.00us', '23.35ms', '1.02s') in milliseconds."""
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", wrk_value).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def targets(report):
    """(figure, measured, target text, met) for each target of the brief that was measured."""
    rows = []
    ingest = report.get("ingest")
    if ingest:
        rps, p99 = ingest["requests_per_second"], milliseconds(ingest["latency_p99"])
        rows += [
            ("ingest requests/s", rps, ">= 1000", rps >= 1000),
            ("ingest p99 (ms)", p99, "<= 25", p99 <= 25),
            ("ingest non-2xx", ingest["non_2xx"], "0", ingest["non_2xx"] == 0),
        ]
    replies = report.get("replies") or {}
    groups, lateness = replies.get("groups", {}), replies.get("reply_lateness_s", {})
    if groups:
        created = replies["conversations"]["created"]
        rows += [
            ("conversations", created, ">= 100", created >= 100),
            ("groups sent", groups["sent"], ">= 500", groups["sent"] >= 500),
            ("groups unanswered", groups["unanswered"], "0", groups["unanswered"] == 0),
            (
                "groups answered twice",
                groups["answered_more_than_once"],
                "0",
                groups["answered_more_than_once"] == 0,
            ),
        ]
    if lateness.get("count"):
        rows += [
            ("reply lateness min (s)", lateness["min"], ">= 0", lateness["min"] >= 0),
            ("reply lateness p50 (s)", lateness["p50"], "<= 0.5", lateness["p50"] <= 0.5),
            ("reply lateness p99 (s)", lateness["p99"], "<= 1.0", lateness["p99"] <= 1.0),
        ]
    rows += [
        ("peak RSS (MB)", report["peak_rss_mb"], "< 500", report["peak_rss_mb"] < 500),
        (
            "buffer keys left",
            report.get("buffer_keys_left"),
            "0",
            report.get("buffer_keys_left") == 0,
        ),
    ]
    return rows


def print_targets(report):
    print("targets:")
    for figure, measured, target, met in targets(report):
        print(f"  {figure:<24} {measured:>10} {target:>8}  {'ok' if met else 'MISSED'}")


if __name__ == "__main__":
    main()
