"""Ingest of two checkouts against the floor app, side by side, fair to both.

`../shared/bench/side_by_side.sh` compares one running service with the floor app. Comparing
two versions of the service that way on this shared machine misleads: two identical
checkouts run at once came out 9 % apart (0.472 and 0.515 of the floor), by where they sat
in the rotation and which one's groups were still being answered during the next run. So
this script runs both checkouts at once (each `scripts/run.sh`: web, worker and scheduler, on
a PostgreSQL database and a Redis index of its own), and the floor app, in rounds of short
`wrk -t2 -c16` runs in a shuffled order, then swaps the two checkouts' ports, databases and
Redis indexes and does it again.

Prints each run (requests/s, p99, the CPU its web processes spent per request, from /proc),
then, per checkout and per assignment, the medians and the ratio of its requests/s to the
floor's median in the same assignment, and the mean of the two assignments.

    .venv/bin/python scripts/bench_ingest_ab.py ../wt/before .            # A, then B
    .venv/bin/python scripts/bench_ingest_ab.py ../wt/before . --rounds 8 --seconds 10

Needs wrk, PostgreSQL on 127.0.0.1:5432 (databases ingest_a, ingest_b and floorbench are
dropped and created), Redis on 127.0.0.1:6379 (indexes 11 and 12 are flushed; the floor
app writes `buf:<id>` keys in index 0, deleted at the end), ports 18601, 18700 and 18701
free, and ../shared/bench. Both checkouts run with this checkout's .venv; their pid files
and the conversation lists go to a temporary directory. It stops everything it started,
however it ends. About (2 x rounds x 3 x (seconds + 1)) seconds plus start-ups; with few
rounds a 10 % difference is within this machine's noise (a 2-round run once put the two
versions the other way round).
"""

import argparse
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
if str(HERE) not in sys.path:  # run as a file: scripts/ is on the path, the root is not
    sys.path.insert(0, str(HERE))

from scripts import bench  # noqa: E402

BENCH = HERE.parent / "shared" / "bench"
VENV = HERE / ".venv"
PG = "postgresql://postgres@127.0.0.1:5432"
SLOTS = [(18700, "ingest_a", 11), (18701, "ingest_b", 12)]
FLOOR_PORT = 18601


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path, help="first checkout")
    parser.add_argument("b", type=Path, help="second checkout")
    parser.add_argument("--rounds", type=int, default=6, help="rounds per assignment")
    parser.add_argument("--seconds", type=int, default=8, help="length of each wrk run")
    args = parser.parse_args()
    a, b = args.a.resolve(), args.b.resolve()
    if a == b:
        parser.error("the two checkouts must be different directories")
    for checkout in (a, b):
        if not (checkout / "scripts" / "run.sh").is_file():
            parser.error(f"{checkout}: not a checkout of this project (no scripts/run.sh)")
    for port in (FLOOR_PORT, *(port for port, _, _ in SLOTS)):
        if answers(port):
            sys.exit(f"port {port} already answers: a stack left over from an earlier run?")
    names = {a: f"A:{a.name}", b: f"B:{b.name}"}
    results = {}  # (assignment, name) -> [(rps, p99_ms, web_ms)]
    scratch = Path(tempfile.mkdtemp(prefix="bench-ingest-ab-"))
    started = []
    try:
        floor = start_floor(started)
        floor_convs = make_floor_conversations(scratch)
        for assignment, order in enumerate(((a, b), (b, a)), start=1):
            first, second = (names[checkout] for checkout in order)
            print(f"== assignment {assignment}: {first} on slot 1, {second} on slot 2")
            services = []
            try:
                targets = [("floor", f"http://127.0.0.1:{FLOOR_PORT}/floor/", floor, floor_convs)]
                for checkout, slot in zip(order, SLOTS, strict=True):
                    service = start_service(checkout, *slot, scratch, services)
                    url = f"http://127.0.0.1:{slot[0]}/webhook/"
                    convs = make_conversations(slot[0], scratch)
                    targets.append((names[checkout], url, service, convs))
                for _ in range(args.rounds):
                    random.shuffle(targets)
                    for name, url, process, convs in targets:
                        run = measure(url, convs, args.seconds, gunicorn_pids(process))
                        results.setdefault((assignment, name), []).append(run)
                        print(
                            f"{name:24s} rps={run[0]:.0f} p99_ms={run[1]:.1f}"
                            f" web_ms_per_request={run[2]:.3f}",
                            flush=True,
                        )
            finally:
                stop_all(services)
    finally:
        stop_all(started)
        forget_floor_keys(scratch)
        shutil.rmtree(scratch, ignore_errors=True)
    summarize(results, names)


def summarize(results, names):
    print(
        "\n| checkout | assignment | median requests/s | ratio to floor | p99 ms | web CPU ms/req |"
    )
    print("|---|---|---|---|---|---|")
    means = {}
    for (assignment, name), runs in sorted(results.items()):
        rps = statistics.median(r[0] for r in runs)
        floor = statistics.median(r[0] for r in results[(assignment, "floor")])
        ratio = rps / floor
        if name != "floor":
            means.setdefault(name, []).append(ratio)
        p99 = statistics.median(r[1] for r in runs)
        web = statistics.median(r[2] for r in runs)
        print(f"| {name} | {assignment} | {rps:.0f} | {ratio:.3f} | {p99:.1f} | {web:.3f} |")
    for name in names.values():
        mean = statistics.mean(means[name])
        print(f"{name}: mean ratio to the floor over both assignments {mean:.3f}")


def start_floor(started):
    """The floor app (gunicorn, 2 processes x 8 threads, as the service), appended to
    `started` as soon as it runs."""
    psql("drop database if exists floorbench with (force)", "create database floorbench")
    psql(
        "create table m(id uuid primary key, conversation_id uuid not null,"
        " content text not null, received_at timestamptz default now())",
        database="floorbench",
    )
    process = subprocess.Popen(
        [
            VENV / "bin" / "gunicorn",
            "-k",
            "gthread",
            "-w",
            "2",
            "--threads",
            "8",
            "-b",
            f"127.0.0.1:{FLOOR_PORT}",
            "--no-control-socket",
            "floor_app:app",
        ],
        cwd=BENCH,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    started.append(process)
    wait_for(process, FLOOR_PORT, "/hello/", post=True)
    return process


def start_service(checkout, port, database, redis_index, scratch, started):
    """`scripts/run.sh` of `checkout` on its own database and Redis index, appended to
    `started` as soon as it runs."""
    psql(f"drop database if exists {database} with (force)", f"create database {database}")
    env = {
        **os.environ,
        "DATABASE_URL": f"{PG}/{database}",
        "REDIS_URL": f"redis://127.0.0.1:6379/{redis_index}",
        "LOG_LEVEL": "WARNING",
        "PORT": str(port),
        "VENV": str(VENV),
        "FLASK_APP": "wsgi",
        # Not the checkout's instance/run.pid: a `make run` there keeps its own.
        "RUN_PID_FILE": str(scratch / f"run-{port}.pid"),
    }
    subprocess.run(
        ["redis-cli", "-n", str(redis_index), "flushdb"], check=True, capture_output=True
    )
    subprocess.run(
        [VENV / "bin" / "flask", "db", "upgrade"],
        cwd=checkout,
        env=env,
        check=True,
        capture_output=True,
    )
    process = subprocess.Popen(
        ["bash", "scripts/run.sh"],
        cwd=checkout,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    started.append(process)
    wait_for(process, port, "/healthz")
    return process


def answers(port):
    """Whether anything answers HTTP on the port."""
    return (
        subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}/"]).returncode
        == 0
    )


def wait_for(process, port, path, post=False, timeout=60):
    """Until `path` on `port` answers 2xx; exits if `process` ends first (a port taken, a
    broken checkout) or nothing answers within `timeout` seconds."""
    body = ["-H", "Content-Type: application/json", "-d", "{}"] if post else []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"{process.args} exited with status {process.returncode} before answering")
        status = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", *body]
            + [f"http://127.0.0.1:{port}{path}"],
            capture_output=True,
            text=True,
        ).stdout
        if status.startswith("2"):
            return
        time.sleep(0.3)
    sys.exit(f"nothing answered on port {port} within {timeout} s")


def make_conversations(port, scratch):
    path = scratch / f"conversations-{port}.txt"
    subprocess.run(
        [sys.executable, BENCH / "mkconvs.py", f"http://127.0.0.1:{port}", "200", path],
        check=True,
        capture_output=True,
    )
    return path


def make_floor_conversations(scratch):
    path = scratch / "conversations-floor.txt"
    path.write_text("".join(f"{uuid.uuid4()}\n" for _ in range(200)))
    return path


def forget_floor_keys(scratch):
    """Delete the `buf:<id>` keys the floor app wrote into Redis index 0 for this run's ids."""
    path = scratch / "conversations-floor.txt"
    if path.exists():
        keys = [f"buf:{line}" for line in path.read_text().split()]
        subprocess.run(["redis-cli", "-n", "0", "del", *keys], capture_output=True)


def gunicorn_pids(process):
    """The gunicorn processes (master and workers) of the session `process` leads."""
    return subprocess.run(
        ["pgrep", "-s", str(process.pid), "-f", "gunicorn"], capture_output=True, text=True
    ).stdout.split()


def cpu_ms(pids):
    """User + system CPU of these processes so far, in milliseconds."""
    return bench.cpu_ticks(pids) * 1000 / os.sysconf("SC_CLK_TCK")


def measure(url, convs, seconds, pids):
    """(requests/s, p99 ms, web CPU ms per request) of one wrk run."""
    before = cpu_ms(pids)
    started = time.monotonic()
    done = subprocess.run(
        ["wrk", "-t2", "-c16", f"-d{seconds}s", "-s", BENCH / "ingest.lua", url],
        capture_output=True,
        text=True,
        env={**os.environ, "CONVS": str(convs)},
    )
    elapsed = time.monotonic() - started
    spent = cpu_ms(pids) - before
    found = re.search(r"p50_ms=.*", done.stdout)
    if done.returncode != 0 or found is None:
        sys.exit(f"wrk failed on {url} (status {done.returncode}): {done.stderr.strip()[:300]}")
    figures = dict(kv.split("=") for kv in found.group(0).split())
    rps = float(figures["rps"])
    return rps, float(figures["p99_ms"]), spent / max(rps * elapsed, 1)


def psql(*commands, database="postgres"):
    for command in commands:
        subprocess.run(
            ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", database, "-qc", command],
            check=True,
            capture_output=True,
        )


def stop_all(processes):
    """SIGTERM to each process group, then wait; a Ctrl-C meanwhile must not leave one running."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for process in processes:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
    finally:
        signal.signal(signal.SIGINT, previous)


if __name__ == "__main__":
    main()
