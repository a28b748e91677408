"""RQ plumbing: JSON-serialised jobs, the queue, and an rq-scheduler with exact due times."""

from datetime import UTC, datetime

from rq import Queue, SimpleWorker
from rq.job import Job
from rq.serializers import JSONSerializer
from rq_scheduler import Scheduler

from flask import current_app

from service import clock
from service.extensions import redis_client

# Results are not read back: the database is the record. Failures are kept for a week.
RESULT_TTL = 0
WORKER_TTL = 60
SCHEDULER_HEARTBEAT_KEY = "conversations:scheduler:heartbeat"
FAILURE_TTL = 7 * 24 * 3600


class JsonJob(Job):
    """Jobs carry ids and numbers only, so JSON replaces pickle."""

    def __init__(self, id=None, connection=None, serializer=None):
        super().__init__(id=id, connection=connection, serializer=JSONSerializer)


class JsonQueue(Queue):
    job_class = JsonJob

    def __init__(self, *args, **kwargs):
        kwargs["serializer"] = JSONSerializer
        kwargs.setdefault("job_class", JsonJob)
        super().__init__(*args, **kwargs)


class PreciseScheduler(Scheduler):
    """rq-scheduler keeping sub-second due times.

    The stock scheduler stores due times rounded down to the second, so a job may run up to
    a second early; a reply would then wait for a second round trip. Here the score is the
    exact due time and the poll compares against the exact clock.
    """

    job_class = JsonJob
    queue_class = JsonQueue

    def enqueue_at(self, scheduled_time, func, *args, **kwargs):
        job_id = kwargs.pop("job_id", None)
        result_ttl = kwargs.pop("job_result_ttl", None)
        failure_ttl = kwargs.pop("failure_ttl", None)
        job = self._create_job(
            func, args=args, kwargs=kwargs, id=job_id, result_ttl=result_ttl, commit=False
        )
        job.failure_ttl = failure_ttl
        job.save()
        self.connection.zadd(self.scheduled_jobs_key, {job.id: scheduled_time.timestamp()})
        return job

    def heartbeat(self):
        super().heartbeat()
        ttl = int(self._interval) + 10
        self.connection.set(SCHEDULER_HEARTBEAT_KEY, self.name, ex=ttl)

    def postpone(self, job_id, scheduled_time):
        """Move a job still waiting in the scheduler to a later time.

        XX: a job the scheduler already moved to the queue is left alone (never scheduled a
        second time); it will find its group still active and re-arm.
        """
        self.connection.zadd(self.scheduled_jobs_key, {job_id: scheduled_time.timestamp()}, xx=True)

    def get_jobs_to_queue(self, with_times=False):
        return self.get_jobs(clock.now_us() / 1_000_000, with_times=with_times)


def get_queue():
    """The app's job queue."""
    return JsonQueue(current_app.config["RQ_QUEUE"], connection=redis_client.client)


def get_scheduler(interval=None):
    """A scheduler feeding the app's queue."""
    return PreciseScheduler(
        queue=get_queue(),
        connection=redis_client.client,
        interval=interval or current_app.config["SCHEDULER_INTERVAL"],
    )


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


def postpone(job_id, due_us):
    """Move a scheduled job to `due_us`, if it is still waiting in the scheduler."""
    get_scheduler().postpone(job_id, _at(due_us))


def run_at(due_us, func, *args, job_id):
    """Run `func(*args)` at `due_us`: through the scheduler, or at once when already due."""
    if due_us <= clock.now_us():
        get_queue().enqueue(
            func, *args, job_id=job_id, result_ttl=RESULT_TTL, failure_ttl=FAILURE_TTL
        )
    else:
        get_scheduler().enqueue_at(
            _at(due_us),
            func,
            *args,
            job_id=job_id,
            job_result_ttl=RESULT_TTL,
            failure_ttl=FAILURE_TTL,
        )
