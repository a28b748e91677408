"""The service as real processes (gunicorn, RQ workers, schedulers), started and stopped by
the tests: the end-to-end tests (tests/e2e) and the fault suite (tests/faults) share it.

Each process runs in a session of its own, logs to `<logs>/<name>.log` (appended across
restarts) and can be killed, restarted or signalled one at a time.
"""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stack_env(database_url, redis_url, strip=()):
    """The environment of the stack's processes: this one (less the variables starting with
    any of `strip`), pointed at these servers, the web on a free local port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(tuple(strip))}
    env |= {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "PORT": str(free_port()),
        "HOST": "127.0.0.1",
        "FLASK_APP": "wsgi",
        "WEB_CONCURRENCY": "2",
        "LOG_LEVEL": "INFO",
        "RECONCILE_INTERVAL": "1",
        "PYTHONUNBUFFERED": "1",
    }
    return env


def children_of(pid):
    """The pids whose parent is `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces, so split after its ")".
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


class LiveStack:
    """The service's processes, started and stopped by the tests.

    Processes have names: "web" (the gunicorn master), "worker-N", "deliveries-N" and
    "generations-N" (workers of those queues) and "scheduler-N".
    """

    COMMANDS = {
        "web": [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"],
        "worker": [str(BIN / "flask"), "worker"],
        "deliveries": [str(BIN / "flask"), "worker", "--queue", "deliveries"],
        "generations": [str(BIN / "flask"), "worker", "--queue", "generations"],
        "scheduler": [str(BIN / "flask"), "scheduler"],
    }

    def __init__(self, env, logs=None):
        self.env = env
        self.base_url = f"http://127.0.0.1:{env['PORT']}"
        self.processes = {}
        self.lock = threading.RLock()
        self.logs = Path(logs) if logs else ROOT / "instance" / "e2e-logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    # --- processes -------------------------------------------------------------------

    def spawn(self, name):
        """Start (or restart) the process `name`; its kind is the name up to the first '-'."""
        command = self.COMMANDS[name.split("-")[0]]
        with self.lock, open(self.logs / f"{name}.log", "ab") as log:
            self.processes[name] = subprocess.Popen(
                command,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            return self.processes[name]

    def named(self, kind):
        with self.lock:
            return sorted(n for n in self.processes if n.split("-")[0] == kind)

    @property
    def web(self):
        return self.processes.get("web")

    @property
    def workers(self):
        return [self.processes[n] for n in self.named("worker")]

    @property
    def schedulers(self):
        return [self.processes[n] for n in self.named("scheduler")]

    def _add(self, kind, count):
        with self.lock:
            taken = set(self.named(kind))
            for _ in range(count):
                n = next(i for i in range(len(taken) + 1) if f"{kind}-{i}" not in taken)
                taken.add(f"{kind}-{n}")
                self.spawn(f"{kind}-{n}")

    def start(self, workers=2, schedulers=2):
        self.spawn("web")
        self.start_workers(workers)
        self.start_schedulers(schedulers)
        self.wait_web()

    def wait_web(self, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(self.base_url + "/openapi.json", timeout=1).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the live stack did not start; see {self.logs}")

    def start_workers(self, count=2):
        self._add("worker", count)

    def start_delivery_workers(self, count=1):
        self._add("deliveries", count)

    def start_generation_workers(self, count=1):
        self._add("generations", count)

    def start_schedulers(self, count=1):
        self._add("scheduler", count)

    def kill(self, name, sig=signal.SIGKILL):
        """Signal one process (SIGKILL: as an OOM killer or a lost machine would), wait for
        it to end and forget it; returns its name."""
        with self.lock:
            process = self.processes.pop(name)
        if process.poll() is None:
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        return name

    def kill_workers(self):
        """SIGKILL every worker."""
        for name in self.named("worker"):
            self.kill(name)

    def web_workers(self):
        """The pids of gunicorn's worker processes (children of the master)."""
        return children_of(self.web.pid) if self.web else []

    def kill_web_worker(self):
        """SIGKILL one gunicorn worker process; the master starts another. Returns its pid."""
        pid = self.web_workers()[0]
        os.kill(pid, signal.SIGKILL)
        return pid

    def reload_web(self):
        """SIGHUP the gunicorn master: a graceful reload (new workers, then the old ones go)."""
        os.kill(self.web.pid, signal.SIGHUP)

    def exited(self):
        """{name: exit code} of the processes that ended without being asked to."""
        with self.lock:
            return {n: p.returncode for n, p in self.processes.items() if p.poll() is not None}

    def restart_exited(self):
        """Start again every process that ended on its own (as a supervisor would)."""
        with self.lock:
            gone = self.exited()
            for name in gone:
                self.spawn(name)
            return gone

    def stop(self):
        with self.lock:
            processes = list(self.processes.values())
            self.processes.clear()
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    # --- HTTP ------------------------------------------------------------------------

    def post(self, event):
        return requests.post(self.base_url + "/webhook/", json=event, timeout=10)

    def conversation(self, conversation_id):
        return requests.get(f"{self.base_url}/conversations/{conversation_id}/", timeout=10).json()


@contextmanager
def running_web(env, logs=None):
    """A LiveStack with only its web process (gunicorn), answering; stopped on leaving."""
    stack = LiveStack(env, logs=logs)
    try:
        stack.spawn("web")
        stack.wait_web()
        yield stack
    finally:
        stack.stop()
