"""RQ plumbing: JSON-serialised jobs, the queue, and an rq-scheduler with exact due times."""

import uuid
from datetime import UTC, datetime

from rq import Queue, SimpleWorker
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.serializers import JSONSerializer
from rq_scheduler import Scheduler

from flask import current_app

from service.domain import clock
from service.extensions import redis_client

# Results are not read back: the database is the record. Failures are kept for a week.
RESULT_TTL = 0
FAILURE_TTL = 7 * 24 * 3600
# Schedule entries of flushes: "flush_group-<conversation id>-<token>".
FLUSH_PREFIX = "flush_group-"
FLUSH_JOB = "service.jobs.flush_group"
FLUSH_BATCH = 100
WORKER_TTL = 60
SCHEDULER_HEARTBEAT_KEY = "conversations:scheduler:heartbeat"


class JsonJob(Job):
    """Jobs carry ids and numbers only, so JSON replaces pickle."""

    def __init__(self, id=None, connection=None, serializer=None):
        super().__init__(id=id, connection=connection, serializer=JSONSerializer)


class JsonQueue(Queue):
    job_class = JsonJob

    def __init__(self, *args, **kwargs):
        kwargs["serializer"] = JSONSerializer
        super().__init__(*args, **kwargs)


class PreciseScheduler(Scheduler):
    """rq-scheduler with sub-second due times for flushes, moved to the queue in batches.

    The stock scheduler stores due times rounded down to the second, so a job may run up to
    a second early, and a reply would wait for a second round trip. Flush entries keep the
    exact due time and the poll compares against the exact clock. Periodic jobs
    (`expire_held`, `reconcile_groups`) go through the stock path.
    """

    job_class = JsonJob
    queue_class = JsonQueue

    def heartbeat(self):
        super().heartbeat()
        ttl = int(self._interval) + 10
        self.connection.set(SCHEDULER_HEARTBEAT_KEY, self.name, ex=ttl)

    def add_flush(self, entry, when):
        """Schedule a conversation's flush: just an entry in the schedule, no job record."""
        self.connection.zadd(self.scheduled_jobs_key, {entry: when.timestamp()})

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


def get_queue():
    """The app's job queue."""
    return JsonQueue(current_app.config["RQ_QUEUE"], connection=redis_client.client)


def get_scheduler():
    """The app's scheduler handle (also what the scheduler process runs)."""
    ext = current_app.extensions
    if "scheduler" not in ext:
        ext["scheduler"] = PreciseScheduler(
            queue=get_queue(),
            connection=redis_client.client,
            interval=current_app.config["SCHEDULER_INTERVAL"],
        )
    return ext["scheduler"]


def get_worker(name=None):
    """A non-forking worker: jobs are short, and a fork per job would cost more than them."""
    return SimpleWorker(
        [get_queue()],
        connection=redis_client.client,
        serializer=JSONSerializer,
        job_class=JsonJob,
        name=name,
        # A worker that died drops out of /readyz within about two minutes.
        worker_ttl=WORKER_TTL,
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
    """Queue flushes of these conversations at once, FLUSH_BATCH to a job."""
    queue = queue or get_queue()
    for start in range(0, len(conversation_ids), FLUSH_BATCH):
        batch = conversation_ids[start : start + FLUSH_BATCH]
        queue.enqueue(FLUSH_JOB, batch, result_ttl=RESULT_TTL, failure_ttl=FAILURE_TTL)


def schedule_flush(conversation_id, due_us, entry):
    """Flush the conversation's group at `due_us`, or at once when that has passed."""
    if due_us <= clock.now_us():
        flush_now([str(conversation_id)])
    else:
        get_scheduler().add_flush(entry, _at(due_us))
