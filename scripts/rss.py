"""Memory (RSS) and CPU of each process of the service, idle and under load: one figure per
container of deploy/kubernetes/, whose requests and limits come from these (docs/deployment.md,
"Kubernetes").

    .venv/bin/python -m scripts.rss                  # the figures in docs/deployment.md
    .venv/bin/python -m scripts.rss --duration 20    # a quicker look

Runs the processes as `make run` does (scripts/run.sh: the migrations, then web, worker,
delivery worker, generation worker and scheduler), with the reference receiver and bot as
REPLY_WEBHOOK_URL and REPLY_GENERATOR_URL, so the outbound workers work too, and the
deploy/nginx proxy in front of web (the web pod's sidecar). It recreates the PostgreSQL
database of --database-url and flushes the Redis database of --redis-url. It samples VmRSS of
every process from /proc every 0.2 s while idle (everything started) and while
`scripts.replay load` plays through the proxy, and reports per role the idle and peak RSS and
the CPU used during the load; then the peak RSS of the one-shot commands: `flask db upgrade`
(the migration Job), `flask db current` (the init containers) and `docker/healthcheck.py`
(the exec probes). Exits 1 unless the receiver got each group's reply once.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

from scripts.bench import BIN, ROOT, cpu_ticks, descendants, http, prepare_database, rss_kb
from scripts.receiver import new_secret
from tests.proxy import Proxy

ROLES = ("web", "worker", "delivery-worker", "generation-worker", "scheduler")


def role_of(pid):
    """The role of one of run.sh's children, from its command line (None: not one of ours)."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return None
    if any(arg.endswith("gunicorn") for arg in args):
        return "web"
    if "scheduler" in args:
        return "scheduler"
    if "worker" in args:
        queue = args[args.index("--queue") + 1] if "--queue" in args else "replies"
        return {"deliveries": "delivery-worker", "generations": "generation-worker"}.get(
            queue, "worker"
        )
    return None


class Sampler:
    """Peak RSS per role over a phase; a role's RSS is that of its process and children."""

    def __init__(self, roots):
        self.roots = roots  # {role: pid}
        self.peak = dict.fromkeys(roots, 0)

    def sample(self):
        for role, pid in self.roots.items():
            self.peak[role] = max(self.peak[role], rss_kb(descendants({pid})))

    def ticks(self):
        return {role: cpu_ticks(descendants({pid})) for role, pid in self.roots.items()}


def peak_rss_of(command, env):
    """Run `command` to its end; (exit status, its peak RSS in KiB, from wait4's rusage)."""
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_maxrss


def start(command, env, log):
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def stop(process):
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_ready(base, seconds=90):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if http("GET", base + "/readyz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{base}/readyz never answered 200; see instance/rss-logs/")


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/k8s_rss")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/5")
    parser.add_argument(
        "--port",
        type=int,
        default=19100,
        help="web; the next three: proxy, receiver, bot (%(default)s)",
    )
    parser.add_argument("--idle", type=float, default=10, help="seconds sampled idle")
    parser.add_argument("--duration", type=int, default=60, help="seconds of load")
    parser.add_argument("--rate", type=float, default=25, help="new groups per second")
    parser.add_argument("--conversations", type=int, default=300)
    args = parser.parse_args()

    prepare_database(args.database_url)
    redis.Redis.from_url(args.redis_url).flushdb()
    web, proxy_port, receiver_port, bot_port = range(args.port, args.port + 4)
    secret = new_secret()
    env = {
        **os.environ,
        "DATABASE_URL": args.database_url,
        "REDIS_URL": args.redis_url,
        "HOST": "127.0.0.1",
        "PORT": str(web),
        "LOG_LEVEL": "WARNING",
        "REPLY_WEBHOOK_URL": f"http://127.0.0.1:{receiver_port}/",
        "REPLY_WEBHOOK_SECRET": secret,
        "REPLY_GENERATOR_URL": f"http://127.0.0.1:{bot_port}/",
        "RUN_PID_FILE": str(ROOT / "instance" / "rss-run.pid"),
    }
    logs = ROOT / "instance" / "rss-logs"
    logs.mkdir(parents=True, exist_ok=True)
    processes = []
    proxy = Proxy(proxy_port, f"127.0.0.1:{web}")
    report = {}
    try:
        for name, command in (
            (
                "receiver",
                [
                    BIN / "python",
                    "-m",
                    "scripts.receiver",
                    "--port",
                    str(receiver_port),
                    "--secret",
                    secret,
                    "--json",
                ],
            ),
            ("bot", [BIN / "python", "-m", "scripts.bot", "--port", str(bot_port), "--json"]),
            ("run", ["bash", "scripts/run.sh"]),
        ):
            with open(logs / f"{name}.log", "wb") as log:
                processes.append(start([str(part) for part in command], env, log))
        proxy.start()
        base = proxy.base_url
        wait_ready(base)
        run = processes[-1]
        roots = {}
        for pid in descendants({run.pid}) - {run.pid}:
            role = role_of(pid)
            if role and (role not in roots or pid < roots[role]):
                roots[role] = pid
        nginx = proxy.process.pid
        sampler = Sampler({**{role: roots[role] for role in ROLES}, "nginx": nginx})
        deadline = time.monotonic() + args.idle
        while time.monotonic() < deadline:
            sampler.sample()
            time.sleep(0.2)
        idle = dict(sampler.peak)

        sampler.peak = dict.fromkeys(sampler.peak, 0)
        before, started = sampler.ticks(), time.monotonic()
        with open(logs / "load.json", "wb") as out:
            load = start(
                [
                    sys.executable,
                    "-m",
                    "scripts.replay",
                    "load",
                    "--base-url",
                    base,
                    "--rate",
                    str(args.rate),
                    "--conversations",
                    str(args.conversations),
                    "--duration",
                    str(args.duration),
                    "--messages-per-group",
                    "3",
                    "--gap",
                    "1",
                    "--concurrency",
                    "16",
                    "--json",
                ],
                env,
                out,
            )
            while load.poll() is None:
                sampler.sample()
                time.sleep(0.2)
        elapsed = time.monotonic() - started
        after = sampler.ticks()
        tick = os.sysconf("SC_CLK_TCK")
        outcome = json.loads((logs / "load.json").read_text())
        report["load"] = {
            "groups_sent": outcome["groups"]["sent"],
            "requests_per_s": outcome["requests"]["per_second"],
            "seconds": round(elapsed, 1),
        }
        report["roles"] = {
            role: {
                "idle_rss_mib": round(idle[role] / 1024, 1),
                "peak_rss_mib": round(sampler.peak[role] / 1024, 1),
                "cpu_cores": round((after[role] - before[role]) / tick / elapsed, 3),
            }
            for role in sampler.peak
        }
        one_shots = {
            "flask db upgrade": [str(BIN / "flask"), "db", "upgrade"],
            "flask db current": [str(BIN / "flask"), "db", "current"],
            **{
                f"healthcheck.py {check}": [str(BIN / "python"), "docker/healthcheck.py", check]
                for check in ("web", "worker", "scheduler")
            },
        }
        report["one_shots_peak_rss_mib"] = {}
        for name, command in one_shots.items():
            status, peak = peak_rss_of(command, env)
            report["one_shots_peak_rss_mib"][name] = round(peak / 1024, 1)
            if status:
                print(f"rss: {name} exited {status}", file=sys.stderr)
    finally:
        proxy.stop()
        for process in reversed(processes):
            stop(process)
    # The load finds the template's replies only; the bot wrote these, so the receiver counts.
    counts = json.loads((logs / "receiver.log").read_text().splitlines()[-1])
    report["delivered"] = {key: counts.get(key) for key in ("received", "duplicate", "failed")}
    print(json.dumps(report, indent=2))
    sent = report["load"]["groups_sent"]
    return 0 if counts.get("received") == sent and not counts.get("duplicate") else 1


if __name__ == "__main__":
    sys.exit(main())
