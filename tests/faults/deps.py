"""Private dependencies of the fault suite: a PostgreSQL cluster and a Redis server on free
ports (never the shared ones on 5432/6379), and a TCP proxy that can stall.
"""

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import psycopg2
import redis

from tests.stack import free_port

PG_ROOT = Path("/usr/lib/postgresql")


def wait_until(predicate, timeout, what, interval=0.05):
    """Poll until predicate() is truthy; return its value or raise at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except Exception:  # the dependency is still coming up
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready within {timeout}s")
        time.sleep(interval)


def missing_tools():
    """What the suite needs and this machine lacks (empty when it can run)."""
    tools = ["pg_createcluster", "pg_ctlcluster", "pg_dropcluster", "redis-server"]
    missing = [t for t in tools if shutil.which(t) is None]
    if not PG_ROOT.is_dir():
        missing.append(str(PG_ROOT))
    elif os.geteuid() != 0:
        missing.append("root (pg_createcluster makes a cluster owned by postgres)")
    return missing


# A file in a private cluster's configuration directory naming the pid of the suite that owns it.
OWNER_FILE = "faults-owner.pid"


def _owner_alive(version, name):
    try:
        pid = int((Path("/etc/postgresql") / version / name / OWNER_FILE).read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


def drop_stale_clusters():
    """Drop `faults<port>` clusters a killed run left behind: down ones whose owning suite is
    gone. A cluster that is down may belong to a suite running beside this one (another lane
    of `pytest -n`, in the middle of its PostgreSQL outage)."""
    listing = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True).stdout
    for line in listing.splitlines():
        version, name, _, status, *_ = line.split()
        if not (name.startswith("faults") and name[6:].isdigit() and status == "down"):
            continue
        if not _owner_alive(version, name):
            subprocess.run(["pg_dropcluster", version, name], capture_output=True)


class PrivatePostgres:
    """A throwaway cluster (`pg_createcluster <version> faults<port>`), trust auth, no fsync."""

    def __init__(self, database="faults"):
        self.version = max((p.name for p in PG_ROOT.iterdir()), key=int)
        self.port = free_port()
        self.name = f"faults{self.port}"
        self.database = database
        self.created = False

    @property
    def dsn(self):
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={self.database}"

    def url(self, port=None):
        return f"postgresql://postgres@127.0.0.1:{port or self.port}/{self.database}"

    def _ctl(self, *args):
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", self.version, self.name, *args],
            check=True,
            capture_output=True,
        )

    def create(self):
        options = ["fsync=off", "synchronous_commit=off", "full_page_writes=off", "ssl=off"]
        options += ["max_connections=300"]
        command = ["pg_createcluster", self.version, self.name, "--port", str(self.port)]
        command += ["--start-conf", "manual"]
        for option in options:
            command += ["-o", option]
        subprocess.run([*command, "--", "--auth=trust"], check=True, capture_output=True)
        self.created = True
        (Path("/etc/postgresql") / self.version / self.name / OWNER_FILE).write_text(
            str(os.getpid())
        )
        self.start()
        admin = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres")
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{self.database}"')
        admin.close()

    def start(self):
        self._ctl("start")
        wait_until(self.answers, 30, "PostgreSQL")

    def stop(self):
        """Stop fast: open connections are cut, new ones refused."""
        self._ctl("stop", "-m", "fast")

    def answers(self):
        """The server takes connections (to its `postgres` database: ours may not exist yet)."""
        conn = psycopg2.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", connect_timeout=1
        )
        conn.close()
        return True

    def drop(self):
        if self.created:
            subprocess.run(
                ["pg_dropcluster", "--stop", self.version, self.name], capture_output=True
            )
            self.created = False


class PrivateRedis:
    """`redis-server` on a free port, without persistence: a restart starts it empty."""

    def __init__(self, directory):
        self.port = free_port()
        self.directory = Path(directory).resolve()
        self.process = None

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self):
        return redis.Redis(port=self.port, socket_timeout=5, socket_connect_timeout=2)

    def start(self):
        self.directory.mkdir(parents=True, exist_ok=True)
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self.directory)]
        command += ["--logfile", str(self.directory / "redis.log")]
        self.process = subprocess.Popen(command, start_new_session=True)
        wait_until(lambda: self.client().ping(), 15, "Redis")

    def kill(self):
        """SIGKILL the server (its data is gone with it)."""
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def answers(self):
        try:
            return self.client().ping()
        except redis.RedisError:
            return False


class StallProxy:
    """A TCP proxy from a free local port to `upstream_port` that can stall.

    `stall()` stops moving bytes (both ways) without closing anything: reads sit in the
    proxy, new connections are accepted but not connected upstream. `resume()` moves them
    on. A side that closes while flowing closes the other.
    """

    def __init__(self, upstream_port, name="proxy"):
        self.upstream_port = upstream_port
        self.name = name
        self.port = free_port()
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = False
        self._sockets = set()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", self.port), backlog=512)
        self._listener.settimeout(0.2)
        threading.Thread(target=self._accept, name=f"{name}-accept", daemon=True).start()

    @property
    def stalled(self):
        return not self._flowing.is_set()

    def stall(self):
        self._flowing.clear()

    def resume(self):
        self._flowing.set()

    def close(self):
        self._closed = True
        self._flowing.set()
        self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            self._shut(sock)

    def _track(self, sock):
        with self._lock:
            self._sockets.add(sock)

    def _shut(self, sock):
        with self._lock:
            self._sockets.discard(sock)
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()

    def _accept(self):
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._track(client)
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client):
        self._flowing.wait()  # stalled: accepted, not forwarded
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
        except OSError:
            self._shut(client)  # upstream down: the client sees its connection closed
            return
        upstream.settimeout(None)
        self._track(upstream)
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                self._flowing.wait()  # a stall holds data and closes alike
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        self._shut(src)
        self._shut(dst)
