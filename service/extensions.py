"""Extensions, created unbound here and bound to the app in `create_app`.

Every layer below the HTTP one reaches the database and Redis through these, so this module
imports nothing from the service's own packages.
"""

import os
import socket
import threading
import time
import weakref

import redis
import redis.sentinel
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import MetaData

from flask import current_app

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

db = SQLAlchemy(metadata=MetaData(naming_convention=NAMING_CONVENTION))
migrate = Migrate()


def connect_redis(config, **options):
    """A Redis client for the app's config (a mapping with REDIS_URL, and REDIS_SENTINEL as
    `service.config` builds it, or None) that fails fast: RESP2 and raw bytes (RQ needs both),
    a 2 s connect timeout, and one immediate retry on a broken connection (a restarted server)
    but none on a timeout. redis-py 8 retries both ten times by default, which turns a
    stalled Redis into a minute-long wait instead of a 503. `options` go to `redis.Redis`.

    With Sentinel the client asks the sentinels for the master's address on every new
    connection, and drops a connection whose server turned replica (redis-py's
    SentinelManagedConnection); that retry then lands on the new master. While no master is
    known, calls raise MasterNotFoundError, a ConnectionError, so callers treat it as Redis
    being away (503 with Retry-After, workers wait)."""
    retry = Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,))
    url = config["REDIS_URL"]
    sentinel = config.get("REDIS_SENTINEL")
    if not sentinel:
        return redis.Redis.from_url(
            url, protocol=2, socket_connect_timeout=2, retry=retry, **options
        )
    # Only the database and credentials of REDIS_URL apply; the sentinels name the host.
    kept = ("db", "username", "password")
    target = {k: v for k, v in redis.connection.parse_url(url).items() if k in kept}
    if url.startswith("rediss://"):
        target["ssl"] = True
    manager = redis.sentinel.Sentinel(
        sentinel["sentinels"],
        # A sentinel that does not answer within a second is skipped for the next one.
        sentinel_kwargs={
            "socket_timeout": 1,
            "socket_connect_timeout": 1,
            # Not redis-py 8's ten retries with backoff per sentinel: the next sentinel is
            # the retry, and no master known must be a prompt 503, not a 7 s wait.
            "retry": Retry(NoBackoff(), 0),
            "password": sentinel["password"],
            "protocol": 2,
        },
    )
    client = manager.master_for(
        sentinel["master"],
        protocol=2,
        socket_connect_timeout=2,
        retry=retry,
        **target,
        **options,
    )
    _switch_watcher(manager, sentinel).watch(client.connection_pool)
    return client


_WATCHERS = {}
_WATCHERS_LOCK = threading.Lock()


def _switch_watcher(manager, sentinel):
    """This process's watcher of the master named in `sentinel` (REDIS_SENTINEL's settings):
    one thread per process, however many clients."""
    key = (os.getpid(), tuple(sentinel["sentinels"]), sentinel["master"])
    with _WATCHERS_LOCK:
        if key not in _WATCHERS:
            _WATCHERS[key] = SwitchWatcher(manager, sentinel["master"])
        return _WATCHERS[key]


class SwitchWatcher:
    """Drops this process's connections to a Redis master as soon as a sentinel announces
    its replacement (`+switch-master` on its pub/sub; every sentinel is followed, by a thread
    each, since the one that led the failover announces first and the others learn of it
    seconds later).

    Without it, a connection opened before a requested failover keeps talking to the old
    master until Sentinel turns that server into a replica, which it does only some seconds
    later (it waits for the old master to report its role): meanwhile writes land on a server
    whose data is about to be discarded, and a worker blocked in BLPOP there waits for jobs
    that now go to the new master. Connections dropped here reconnect at their next call,
    asking the sentinels for the master's address (redis-py's SentinelConnectionPool), the
    announcing sentinel first. An announcement missed by every thread costs only that delay."""

    def __init__(self, manager, master):
        self.manager = manager
        self.master = master
        self.pools = weakref.WeakSet()
        self._threads = None

    def watch(self, pool):
        """Add a SentinelConnectionPool; starts the watching threads on first use."""
        self.pools.add(pool)
        if self._threads is None:
            self._threads = [
                threading.Thread(
                    target=self._run, args=(sentinel,), name="sentinel-switch-watcher", daemon=True
                )
                for sentinel in self.manager.sentinels
            ]
            for thread in self._threads:
                thread.start()

    def _run(self, sentinel):
        while True:
            try:
                self._follow(sentinel)
            except (redis.exceptions.RedisError, OSError):
                time.sleep(1)

    def _follow(self, sentinel):
        announcer = _address_of(sentinel)
        pubsub = sentinel.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe("+switch-master")
            while True:
                message = pubsub.get_message(timeout=0.5)
                if not message:
                    continue
                # "<master name> <old ip> <old port> <new ip> <new port>"
                fields = message["data"].decode().split()
                if len(fields) == 5 and fields[0] == self.master:
                    for pool in list(self.pools):
                        _leave_old_master(pool, announcer)
        finally:
            pubsub.close()


def _address_of(client):
    kwargs = client.connection_pool.connection_kwargs
    return kwargs.get("host"), kwargs.get("port")


def _leave_old_master(pool, announcer):
    """Point `pool` at the master the sentinels name now, asking `announcer` (a sentinel's
    (host, port)) first: its idle connections close at once, busy ones when released
    (SentinelConnectionPool drops a connection whose address is not the master's). A busy one
    blocked in a long call (a worker's BLPOP) has its socket shut under it, which its own
    thread then sees as the server closing the connection, the case every caller already
    handles (redis-py retries the call once, on a new connection); closing it from this
    thread would race that thread's use."""
    # A sentinel that has not heard of the failover yet would still name the old master:
    # redis-py asks them in list order. Swapped, not moved, as discover_master does.
    sentinels = pool.sentinel_manager.sentinels
    for index, sentinel in enumerate(sentinels):
        if _address_of(sentinel) == announcer:
            sentinels[0], sentinels[index] = sentinel, sentinels[0]
            break
    try:
        pool.get_master_address()
    except redis.exceptions.ConnectionError:
        return  # no master known: connections fail, and reconnect, on their own
    # redis-py has no public view of the connections in use; this attribute is stable in 5-8.
    for connection in list(getattr(pool, "_in_use_connections", ())):
        sock = connection._sock
        if sock is not None and (connection.host, connection.port) != pool.master_address:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class RedisClient:
    """Holds one Redis connection pool per app, whose calls time out after 2 s (Redis answers
    in well under a millisecond; a call that takes seconds is a stall, and a webhook must get
    its 503 within a few seconds even when a new connection's handshake stalls and is
    retried once)."""

    def init_app(self, app):
        app.extensions["redis"] = connect_redis(
            app.config, socket_timeout=2, health_check_interval=30
        )

    @property
    def client(self):
        return current_app.extensions["redis"]


redis_client = RedisClient()
