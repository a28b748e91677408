"""RQ plumbing: JSON-serialised jobs, the queues, a worker and an rq-scheduler that ride out
Redis outages, and exact due times for flushes."""

import logging
import signal
import time
import uuid
from datetime import UTC, datetime

import redis
from rq import Queue, SimpleWorker, worker_registration
from rq.exceptions import NoSuchJobError, StopRequested
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.utils import utcparse
from rq_scheduler import Scheduler

from flask import current_app

from service.domain import clock
from service.extensions import connect_redis, redis_client

# The queues, by role. "replies": flush_group and the periodic upkeep jobs, on the queue named
# RQ_QUEUE. "deliveries": deliver_replies, on RQ_QUEUE + "-deliveries", served by workers of its
# own (`flask worker --queue deliveries`): a pass waits on a receiver's answers for up to ~10 s,
# and a flush behind it on the same worker would wait as long. "generations": generate_replies,
# on RQ_QUEUE + "-generations", with workers of their own for the same reason (the team's bot
# may take seconds to answer).
REPLIES = "replies"
DELIVERIES = "deliveries"
GENERATIONS = "generations"
ROLES = (REPLIES, DELIVERIES, GENERATIONS)
# Results are not read back: the database is the record. Failures are kept for a week.
RESULT_TTL = 0
FAILURE_TTL = 7 * 24 * 3600
# Schedule entries of flushes: "flush_group-<conversation id>-<token>".
FLUSH_PREFIX = "flush_group-"
FLUSH_JOB = "service.jobs.flush_group"
FLUSH_BATCH = 100
DELIVER_JOB = "service.jobs.deliver_replies"
# Set while a deliver_replies pass queued by new work is queued or running (see Linger), so a
# stream of replies queues one pass, not one each: new work then only wakes it. It expires on
# its own in case the pass was lost with Redis or its worker; the periodic pass covers the gap.
DELIVER_QUEUED_KEY = "conversations:deliver_replies:queued"
GENERATE_JOB = "service.jobs.generate_replies"
GENERATE_QUEUED_KEY = "conversations:generate_replies:queued"
PASS_QUEUED_TTL = 5
# A pass queued by new work waits this long for more before it ends (up to its PASS_SECONDS),
# so a steady stream of replies costs one RQ job per pass instead of one job each.
LINGER_SECONDS = 1.0
# A worker heartbeats at least every WORKER_TTL - 15 s (its BLPOP timeout); one that stopped
# drops out of /readyz (live_workers) WORKER_TTL s after its last heartbeat, and out of RQ's
# registry 60 s later.
WORKER_TTL = 20
SCHEDULER_HEARTBEAT_KEY = "conversations:scheduler:heartbeat"
# The scheduler lock is held only while due jobs move to the queue (milliseconds); one left by
# a killed scheduler blocks the others for at most this long.
SCHEDULER_LOCK_MS = 1000
# KEYS: lock. ARGV: holder.
RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS: lock. ARGV: holder, ttl_ms. Takes the lock, or caps the time left on a lock held by
# someone else to ttl_ms: a lock set for longer (the stock rq-scheduler's 10 s, or none) was
# not set by a scheduler of this service and must not hold replies up for that long.
ACQUIRE_LOCK = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
local left = redis.call('PTTL', KEYS[1])
if left == -1 or left > tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
# Redis failures a worker or scheduler waits out instead of exiting.
REDIS_OUTAGES = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
)
log = logging.getLogger(__name__)


class Backoff:
    """Growing pauses between reconnection attempts: 0.25 s doubling up to 1 s.

    Short, because replies wait for the reconnection: once Redis is back, every group due
    meanwhile is answered within about a second, and an attempt a second costs Redis nothing.
    """

    def __init__(self, first=0.25, most=1.0):
        self.first = self.delay = first
        self.most = most

    def wait(self):
        time.sleep(self.delay)
        self.delay = min(self.delay * 2, self.most)

    def reset(self):
        self.delay = self.first


class JsonJob(Job):
    """Jobs carry ids and numbers only, so JSON replaces pickle."""

    def __init__(self, id=None, connection=None, serializer=None):
        super().__init__(id=id, connection=connection, serializer=JSONSerializer)


class JsonQueue(Queue):
    job_class = JsonJob

    def __init__(self, *args, **kwargs):
        kwargs["serializer"] = JSONSerializer
        super().__init__(*args, **kwargs)


class JsonWorker(SimpleWorker):
    """A non-forking worker (jobs are short, and a fork per job would cost more than them)
    that registers again when Redis lost its registration (a flush, a restart)."""

    # RQ's own reconnection pauses while dequeuing grow to 60 s, and replies wait for them.
    max_connection_wait_time = 1.0

    def heartbeat(self, timeout=None, pipeline=None):
        super().heartbeat(timeout, pipeline)
        if pipeline is None and not self.connection.sismember(
            worker_registration.REDIS_WORKER_KEYS, self.key
        ):
            with self.connection.pipeline() as pipe:
                pipe.hset(self.key, mapping=self.serialize())
                worker_registration.register(self, pipe)
                pipe.expire(self.key, self.worker_ttl + 60)
                pipe.execute()
            log.warning("worker_registered_again", extra={"worker": self.name})


class PreciseScheduler(Scheduler):
    """rq-scheduler with sub-second due times for flushes, moved to the queue in batches,
    periodic jobs that come back when Redis lost them, and a run loop that outlives Redis.

    The stock scheduler stores due times rounded down to the second, so a job may run up to
    a second early, and a reply would wait for a second round trip. Flush entries keep the
    exact due time and the poll compares against the exact clock. Periodic jobs
    (`expire_held`, `reconcile_groups`, in `periodic`: {job id: (dotted path, interval in
    seconds, queue name)}) go through the stock path, with records that never expire.
    """

    job_class = JsonJob
    queue_class = JsonQueue

    def __init__(self, *args, periodic=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.periodic = periodic or {}
        self._acquire = None

    def heartbeat(self):
        super().heartbeat()
        ttl = int(self._interval) + 10
        self.connection.set(SCHEDULER_HEARTBEAT_KEY, self.name, ex=ttl)

    def remove_lock(self):
        """Release the lock only if this scheduler still holds it: after a slow poll it may
        have expired and been taken by another scheduler."""
        if self._lock_acquired:
            self.connection.eval(RELEASE_LOCK, 1, self.scheduler_lock_key, self.name)
            self._lock_acquired = False

    def acquire_lock(self):
        """Take the lock for SCHEDULER_LOCK_MS, or cap a longer lock someone else holds."""
        if self._acquire is None:
            self._acquire = self.connection.register_script(ACQUIRE_LOCK)
        taken = self._acquire(keys=[self.scheduler_lock_key], args=[self.name, SCHEDULER_LOCK_MS])
        self._lock_acquired = bool(taken)
        return self._lock_acquired

    def register_birth(self):
        """Register under this scheduler's name, replacing a record a lost connection left."""
        with self.connection.pipeline() as pipe:
            pipe.delete(self.key)
            pipe.hset(self.key, "birth", time.time())
            pipe.expire(self.key, int(self._interval) + 10)
            pipe.execute()

    def _install_signal_handlers(self):
        # Stop at once, without Redis calls that could fail (or hang) during an outage; the
        # run loop's cleanup does what it can.
        def stop(signum, frame):
            raise SystemExit()

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)

    def ensure_periodic(self, force=False):
        """(Re)schedule each periodic job whose schedule entry or record is missing (each one
        when `force`: a new interval in the configuration takes effect at start)."""
        with self.connection.pipeline(transaction=False) as pipe:
            for job_id in self.periodic:
                pipe.zscore(self.scheduled_jobs_key, job_id)
                pipe.exists(self.job_class.key_for(job_id))
            found = pipe.execute()
        now = datetime.now(UTC).replace(tzinfo=None)
        for index, (job_id, (func, interval, queue)) in enumerate(self.periodic.items()):
            if not force and found[2 * index] is not None and found[2 * index + 1]:
                continue
            self.cancel(job_id)
            # The queue is the job's origin, where enqueue_job puts it when due.
            self.schedule(
                now,
                func,
                interval=interval,
                repeat=None,
                id=job_id,
                result_ttl=-1,
                queue_name=queue,
            )
            log.info(
                "periodic_job_scheduled",
                extra={"job": job_id, "interval_s": interval, "queue": queue},
            )

    def run(self, burst=False):
        """Move due jobs to the queue every `interval` seconds until SIGTERM or SIGINT.

        A Redis outage of any length is waited out with growing pauses; once Redis answers
        again the scheduler registers again and restores the periodic jobs, so a flushed or
        restarted Redis needs no manual step.
        """
        self._install_signal_handlers()
        backoff = Backoff()
        registered = False
        try:
            while True:
                started = time.monotonic()
                try:
                    if not registered:
                        self.register_birth()
                        self.ensure_periodic(force=True)
                        registered = True
                    self.heartbeat()
                    if self.acquire_lock():
                        try:
                            self.ensure_periodic()
                            self.enqueue_jobs()
                        finally:
                            self.remove_lock()
                        if burst:
                            return
                    backoff.reset()
                except REDIS_OUTAGES as exc:
                    log.warning("scheduler_redis_unavailable", extra={"reason": str(exc)})
                    self._lock_acquired = False
                    registered = False
                    backoff.wait()
                    continue
                time.sleep(max(0.0, self._interval - (time.monotonic() - started)))
        finally:
            try:
                self.remove_lock()
                self.register_death()
            except REDIS_OUTAGES:
                pass

    def add_flushes(self, entries):
        """Schedule conversations' flushes ({entry: aware datetime}) in one ZADD: just entries
        in the schedule, no job records."""
        if entries:
            mapping = {entry: when.timestamp() for entry, when in entries.items()}
            self.connection.zadd(self.scheduled_jobs_key, mapping)

    def enqueue_jobs(self):
        """Move due jobs to the queue; due flushes go in batches, one RQ job per batch.

        A flush is a few milliseconds of work and an RQ job costs about as much again in
        Redis round trips, so the flushes due at one poll share a job.
        """
        now = clock.now_us() / 1_000_000
        due = [d.decode() for d in self.connection.zrangebyscore(self.scheduled_jobs_key, 0, now)]
        flushes = self._claim([d for d in due if d.startswith(FLUSH_PREFIX)])
        conversations = list(dict.fromkeys(conversation_of(entry) for entry in flushes))
        flush_now(conversations, JsonQueue(self.queue_name, connection=self.connection))
        for job_id in (d for d in due if not d.startswith(FLUSH_PREFIX)):
            try:
                job = self.job_class.fetch(job_id, connection=self.connection)
            except NoSuchJobError:
                self.cancel(job_id)
                continue
            self.enqueue_job(job)
        return due

    def _claim(self, entries):
        """Take entries out of the schedule; only the ones this scheduler removed are its own."""
        with self.connection.pipeline(transaction=False) as pipe:
            for entry in entries:
                pipe.zrem(self.scheduled_jobs_key, entry)
            removed = pipe.execute()
        return [entry for entry, gone in zip(entries, removed, strict=True) if gone]


def queue_name(role=REPLIES):
    """The RQ name of a role's queue (one of ROLES): RQ_QUEUE, or RQ_QUEUE plus "-deliveries"
    or "-generations", so deployments that share a Redis database under different RQ_QUEUE names
    keep their deliveries and generations apart too."""
    base = current_app.config["RQ_QUEUE"]
    return base if role == REPLIES else f"{base}-{role}"


def get_queue(role=REPLIES):
    """The app's job queue of a role (one of ROLES)."""
    return JsonQueue(queue_name(role), connection=redis_client.client)


def periodic_jobs():
    """The periodic jobs: {job id: (dotted path, interval in seconds, queue name)}."""
    replies = queue_name(REPLIES)
    jobs = {
        "expire_held": ("service.jobs.expire_held", 1, replies),
        "reconcile_groups": (
            "service.jobs.reconcile_groups",
            current_app.config["RECONCILE_INTERVAL"],
            replies,
        ),
    }
    # Retries that came due, and passes whose job was lost (Redis) or whose worker died.
    if current_app.config["REPLY_GENERATOR_URL"] is not None:
        jobs["generate_replies"] = (
            GENERATE_JOB,
            current_app.config["REPLY_GENERATOR_INTERVAL"],
            queue_name(GENERATIONS),
        )
    if current_app.config["REPLY_WEBHOOK_URL"] is not None:
        jobs["deliver_replies"] = (
            DELIVER_JOB,
            current_app.config["DELIVERY_INTERVAL"],
            queue_name(DELIVERIES),
        )
    return jobs


def get_scheduler():
    """The app's scheduler handle (also what the scheduler process runs)."""
    ext = current_app.extensions
    if "scheduler" not in ext:
        ext["scheduler"] = PreciseScheduler(
            queue=get_queue(),
            connection=redis_client.client,
            interval=current_app.config["SCHEDULER_INTERVAL"],
            periodic=periodic_jobs(),
        )
    return ext["scheduler"]


def get_worker(name=None, roles=(REPLIES,)):
    """A worker of these roles' queues (in that order of priority) on a Redis connection of
    its own.

    RQ sets its connection's read timeout to its BLPOP wait plus 10 s; on its own connection
    that leaves the 2 s timeout of the jobs' Redis calls (the app's client) as it is.
    """
    ext = current_app.extensions
    if "worker_redis" not in ext:
        ext["worker_redis"] = connect_redis(current_app.config)
    connection = ext["worker_redis"]
    return JsonWorker(
        [JsonQueue(queue_name(role), connection=connection) for role in roles],
        connection=connection,
        serializer=JSONSerializer,
        job_class=JsonJob,
        name=name,
        worker_ttl=WORKER_TTL,
    )


def run_worker(name=None, burst=False, logging_level="WARNING", role=REPLIES):
    """Work on the queue of `role` (one of ROLES) until a stop is requested
    (SIGTERM/SIGINT: warm shutdown) or, with `burst`, the queue is empty.

    RQ's work loop quits on a Redis timeout or an unexpected error; this starts a new worker
    after a growing pause instead, so a Redis outage of any length is waited out.
    """
    backoff = Backoff()
    # The last worker built: its signal handlers are the ones installed, so it is the one a
    # SIGTERM marks, even while building the next one fails.
    worker = None
    while True:
        started = time.monotonic()
        try:
            # RQ's constructor already talks to Redis (CLIENT SETNAME), so it is retried too.
            worker = get_worker(name, roles=(role,))
            worker.work(burst=burst, with_scheduler=False, logging_level=logging_level)
        except redis.exceptions.RedisError as exc:
            if burst and worker is None:
                raise
            # Outages, and the odd answer of a connection cut mid-transaction (a Sentinel
            # failover): a new worker on a new connection is the way out of both.
            reason = f"{type(exc).__name__}: {exc}"
            log.warning("worker_redis_unavailable", extra={"reason": reason})
        if burst or _stop_requested(worker):
            return
        log.warning("worker_restarting", extra={"worker": worker.name if worker else name})
        if time.monotonic() - started > 60:  # it had been working: a new outage
            backoff.reset()
        try:
            backoff.wait()
        except (StopRequested, *REDIS_OUTAGES):  # SIGTERM: RQ's handler raises in the pause
            pass
        if _stop_requested(worker):
            return
        if worker is not None and name is not None:
            try:  # a record its lost connection could not mark dead would block the name
                worker.connection.delete(worker.key)
            except REDIS_OUTAGES:
                pass


def _stop_requested(worker):
    return worker is not None and worker._shutdown_requested_date is not None


def live_workers(role=REPLIES):
    """How many workers of the app's queue of `role` sent a heartbeat within the last WORKER_TTL s.

    A worker heartbeats at least every WORKER_TTL - 15 s, so one that stopped (killed, or
    cut off from Redis) drops out of this count within WORKER_TTL s; its registration stays
    for a minute longer. Reads the registry directly: `Worker.all()` would raise the read
    timeout of the connection it is given to a worker's (RQ sets it to its BLPOP wait).
    """
    client = redis_client.client
    keys = worker_registration.get_keys(queue=get_queue(role))
    if not keys:
        return 0
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hget(key, "last_heartbeat")
        beats = pipe.execute()
    now = datetime.now(UTC)
    return sum(
        1
        for beat in beats
        if beat and (now - utcparse(beat.decode())).total_seconds() <= WORKER_TTL
    )


def _at(due_us):
    return datetime.fromtimestamp(due_us / 1_000_000, tz=UTC)


def flush_entry(conversation_id):
    """A fresh schedule entry for a conversation's flush.

    Fresh each time: re-using an entry that already left the schedule could run it twice.
    """
    return f"{FLUSH_PREFIX}{conversation_id}-{uuid.uuid4().hex[:12]}"


def conversation_of(entry):
    return entry[len(FLUSH_PREFIX) : len(FLUSH_PREFIX) + 36]


def flush_now(conversation_ids, queue=None):
    """Queue flushes of these conversations (ids as text) at once, FLUSH_BATCH to a job."""
    if not conversation_ids:
        return
    queue = queue or get_queue()
    for start in range(0, len(conversation_ids), FLUSH_BATCH):
        batch = conversation_ids[start : start + FLUSH_BATCH]
        queue.enqueue(FLUSH_JOB, batch, result_ttl=RESULT_TTL, failure_ttl=FAILURE_TTL)


def schedule_flushes(due):
    """Flush each conversation's group ({conversation_id: due_us}) at its due time: the ones
    due already queued at once, FLUSH_BATCH to a job; the others scheduled in one ZADD."""
    now = clock.now_us()
    flush_now([str(c) for c, due_us in due.items() if due_us <= now])
    later = {flush_entry(c): _at(due_us) for c, due_us in due.items() if due_us > now}
    if later:
        get_scheduler().add_flushes(later)


def _wake_key(key):
    return key + ":wake"


def _pass_soon(job, role, key):
    """Wake the pass of `job` that holds `key` (queued, or running and waiting for work), or
    queue one on the queue of `role` when none does; never fails the caller (the periodic
    pass comes anyway). One round trip, plus the enqueue when a pass is queued."""
    wake = _wake_key(key)
    try:
        with redis_client.client.pipeline(transaction=False) as pipe:
            pipe.lpush(wake, 1)
            pipe.ltrim(wake, 0, 0)
            pipe.expire(wake, PASS_QUEUED_TTL)
            pipe.set(key, 1, nx=True, ex=PASS_QUEUED_TTL)
            queued = pipe.execute()[-1]
        if queued:
            get_queue(role).enqueue(
                job, linger=True, result_ttl=RESULT_TTL, failure_ttl=FAILURE_TTL
            )
    except redis.exceptions.RedisError as exc:
        log.warning(f"{job.rsplit('.', 1)[-1]}_enqueue_failed", extra={"reason": str(exc)})


class Linger:
    """The life of a pass queued by new work (`linger`), or of any other pass (not).

    A lingering pass holds `key` while it runs, so new work wakes it (a Redis list, BLPOP)
    instead of queueing another job; when no work came for LINGER_SECONDS, or its time is up,
    it lets the key go and takes one last look, so work stored just before is not left to
    the periodic pass. Other passes (the periodic one, the CLI's) let the key go as they
    start: work stored from then on queues a new pass (a queued pass whose job was lost no
    longer holds back new work). Redis errors end the lingering, never the pass."""

    def __init__(self, job, key, linger, seconds):
        self.name = job.rsplit(".", 1)[-1]
        self.key = key
        self.holding = False
        if linger:
            try:
                with redis_client.client.pipeline(transaction=False) as pipe:
                    # Until the pass's own deadline (`seconds`) and a margin: a pass killed
                    # with its worker holds it that long at most.
                    pipe.set(key, 1, ex=int(seconds) + PASS_QUEUED_TTL)
                    # Wakes sent before now are for work the first claim sees.
                    pipe.delete(_wake_key(key))
                    pipe.execute()
                self.holding = True
            except redis.exceptions.RedisError as exc:
                self._warn("linger_failed", exc)
        else:
            self.holding = True
            self.release()

    def idle(self, ends):
        """A claim found nothing: True to claim again (new work woke the pass, or the last
        look after letting go), False to end the pass. `ends`: its monotonic deadline."""
        if not self.holding:
            return False
        wait = min(LINGER_SECONDS, ends - time.monotonic())
        if wait > 0:
            try:
                if redis_client.client.blpop([_wake_key(self.key)], timeout=wait):
                    return True
            except redis.exceptions.RedisError as exc:
                self._warn("linger_failed", exc)
        return self.release()

    def release(self):
        """Let the key go: True the first time (the caller takes one last look)."""
        if not self.holding:
            return False
        self.holding = False
        try:
            redis_client.client.delete(self.key)
        except redis.exceptions.RedisError as exc:  # it expires on its own
            self._warn("unqueue_failed", exc)
        return True

    def _warn(self, event, exc):
        log.warning(f"{self.name}_{event}", extra={"reason": str(exc)})


def deliver_soon():
    """Wake or queue a deliver_replies pass (see _pass_soon)."""
    _pass_soon(DELIVER_JOB, DELIVERIES, DELIVER_QUEUED_KEY)


def deliver_linger(linger, seconds):
    """The Linger of a deliver_replies pass of at most `seconds` (`linger`: queued by
    deliver_soon)."""
    return Linger(DELIVER_JOB, DELIVER_QUEUED_KEY, linger, seconds)


def generate_soon():
    """Wake or queue a generate_replies pass (see _pass_soon)."""
    _pass_soon(GENERATE_JOB, GENERATIONS, GENERATE_QUEUED_KEY)


def generate_linger(linger, seconds):
    """The Linger of a generate_replies pass of at most `seconds` (`linger`: queued by
    generate_soon)."""
    return Linger(GENERATE_JOB, GENERATE_QUEUED_KEY, linger, seconds)
