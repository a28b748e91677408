"""A Sentinel-managed Redis on private ports (one master, one replica, three sentinels, no
persistence), and the fault suite's stage on it: the service's processes configured with
REDIS_SENTINELS instead of a fixed server, against a private PostgreSQL cluster.
"""

import os
import signal
import subprocess

import redis

from tests.faults.deps import PrivatePostgres, wait_until
from tests.faults.harness import RUNTIME, FaultEnv
from tests.stack import free_port, stack_env

MASTER_NAME = "mymaster"
# Sentinel's own defaults are 30 s and 3 min; a test wants a failover in seconds.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000


class RedisNode:
    """One `redis-server` on a free port, without persistence."""

    def __init__(self, directory, replica_of=None):
        self.port = free_port()
        self.directory = directory
        self.replica_of = replica_of
        self.process = None

    def client(self):
        return redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=1)

    def start(self):
        self.directory.mkdir(parents=True, exist_ok=True)
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self.directory)]
        command += ["--logfile", str(self.directory / f"redis-{self.port}.log")]
        if self.replica_of:
            command += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        self.process = subprocess.Popen(command, start_new_session=True)
        wait_until(lambda: self.client().ping(), 15, f"Redis on {self.port}")

    def kill(self):
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def role(self):
        """b"master", b"slave", or None when it does not answer."""
        try:
            return self.client().info("replication")["role"].encode()
        except redis.RedisError:
            return None


class SentinelSet:
    """A master, a replica and three sentinels watching them under MASTER_NAME."""

    def __init__(self, directory):
        self.directory = directory
        self.nodes = []
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels = []

    @property
    def addresses(self):
        """REDIS_SENTINELS for the service."""
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def sentinel(self, index=0):
        return redis.Redis(
            port=self.sentinel_ports[index], socket_timeout=2, socket_connect_timeout=1
        )

    def start(self):
        master = RedisNode(self.directory)
        master.start()
        replica = RedisNode(self.directory, replica_of=master.port)
        replica.start()
        self.nodes = [master, replica]
        self.wait_synced(replica)
        for port in self.sentinel_ports:
            conf = self.directory / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.directory}\n"
                f"logfile {self.directory / f'sentinel-{port}.log'}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master.port} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
            )
            command = ["redis-server", str(conf), "--sentinel"]
            self.sentinels.append(subprocess.Popen(command, start_new_session=True))
        self.wait_ready()

    def stop(self):
        for process in self.sentinels:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
        for node in self.nodes:
            node.kill()

    def master_port(self, index=0):
        """The master's port as sentinel `index` names it (None when it names none)."""
        address = self.sentinel(index).sentinel_get_master_addr_by_name(MASTER_NAME)
        return int(address[1]) if address else None

    def master(self):
        """The node every sentinel names master and that says it is one, else None."""
        ports = {self.master_port(i) for i in range(len(self.sentinel_ports))}
        for node in self.nodes:
            if ports == {node.port} and node.role() == b"master":
                return node
        return None

    def replica(self):
        master = self.master()
        return next(node for node in self.nodes if node is not master)

    def wait_synced(self, replica, timeout=30):
        """Until `replica` has caught up with its master (a failover needs a good replica)."""

        def synced():
            info = replica.client().info("replication")
            return info["role"] == "slave" and info.get("master_link_status") == "up"

        wait_until(synced, timeout, f"the replica on {replica.port}")

    def wait_ready(self, timeout=30):
        """Until every sentinel sees the master, its replica and the two other sentinels."""

        def ready():
            for index in range(len(self.sentinel_ports)):
                state = self.sentinel(index).sentinel_master(MASTER_NAME)
                if state["num-slaves"] < 1 or state["num-other-sentinels"] < 2:
                    return False
                replicas = self.sentinel(index).sentinel_slaves(MASTER_NAME)
                if not any(r["master-link-status"] == "ok" and not r["is_sdown"] for r in replicas):
                    return False
            return self.master() is not None

        wait_until(ready, timeout, "the sentinels", interval=0.1)

    def failover(self, index=0, timeout=30):
        """`SENTINEL FAILOVER` sent to sentinel `index`, then wait until the other node is the
        master everywhere. Returns the new master."""
        old = self.master()
        self.sentinel(index).sentinel_failover(MASTER_NAME)
        return self._wait_new_master(old, timeout)

    def kill_master(self, timeout=30):
        """SIGKILL the master (its data goes with it), then wait until the sentinels have
        promoted the replica. Returns the new master."""
        old = self.master()
        old.kill()
        return self._wait_new_master(old, timeout)

    def _wait_new_master(self, old, timeout):
        def promoted():
            node = self.master()
            return node if node is not None and node is not old else None

        return wait_until(promoted, timeout, "a new master", interval=0.05)


class SentinelEnv(FaultEnv):
    """The fault suite's stage with Redis behind Sentinel: no stall proxy in front of Redis
    (the sentinels hand out the servers' own addresses), PostgreSQL direct."""

    def __init__(self):
        super().__init__()
        self.pg = PrivatePostgres(database="sentinel")
        self.directory = (RUNTIME / "sentinel").resolve()
        self.set = SentinelSet(self.directory)

    def start(self):
        self.pg.create()
        self.set.start()
        env = stack_env(
            self.pg.url(),
            # Its host and port are not used: the sentinels name the master.
            "redis://unused:6379/0",
            strip=("WEB_", "DB_", "RQ_", "PROMETHEUS_", "QUIET_", "HOLD_", "RECONCILE_", "REDIS_"),
        )
        env |= {"REDIS_SENTINELS": self.set.addresses, "REDIS_SENTINEL_MASTER": MASTER_NAME}
        self._start_service(env, self.directory / "logs")

    def stop(self):
        self._supervising.clear()
        if self.stack:
            self.stack.stop()
        self.set.stop()
        self.pg.drop()

    def redis_client(self):
        return self.set.master().client()

    def heal(self):
        self.dirty = False
