"""Prometheus metrics.

Two kinds, so `/metrics` is complete whatever the deployment:
- per-web-process metrics (events, request latency) use prometheus_client, in multiprocess
  mode under gunicorn (PROMETHEUS_MULTIPROC_DIR, set by gunicorn.conf.py);
- pipeline metrics (replies, lateness, held/expired, flush decisions) happen in web and worker
  processes on any host, so they are counted in one Redis hash and read back at scrape time,
  together with gauges taken from the database and the queues.
"""

import collections
import logging
import os
from dataclasses import dataclass

import redis.exceptions
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

log = logging.getLogger(__name__)

EVENTS = Counter("webhook_events_total", "Webhook events by type and outcome", ["type", "outcome"])
REQUEST_LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency by route",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)

PIPELINE_KEY = "conversations:metrics"
LATENESS_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0, 10.0, 30.0)
# Named after the action that counts them (a job, use case and log event of the same name).
COUNTERS = {
    "replies_quiet": "Groups answered after the quiet window (closed for the generator, with one)",
    "replies_close": "Groups answered by CLOSE_CONVERSATION (closed for the generator, with one)",
    "hold_message": "Messages held while their conversation was unknown",
    "join_held": "Held messages that joined their conversation",
    "expire_held": "Held messages dropped after the hold window",
    "reconcile_groups": "Groups re-armed from the database by reconcile_groups",
    "flush_group_ready": "flush_group runs that answered or found nothing to answer",
    "flush_group_wait": "flush_group runs that re-armed for a later quiet window",
    "flush_group_empty": "flush_group runs that found an empty buffer",
}


@dataclass(frozen=True)
class Calls:
    """The metrics of one kind of outbound call, kept in the pipeline hash: calls by outcome
    (`<attempts>_<outcome>`), the ends of the work by outcome (`<ended>_<outcome>`), and a
    latency histogram (`<latency>_le_<bound>`, `_sum`, `_count`)."""

    attempts: str
    attempt_outcomes: tuple
    attempts_help: str
    ended: str
    ended_outcomes: tuple
    ended_help: str
    latency: str
    latency_buckets: tuple
    latency_help: str


# Delivery (service.pipeline.deliveries): attempts by outcome, deliveries ended by outcome,
# and the latency from the reply's storage to the receiver's 2xx.
DELIVERY = Calls(
    "delivery_attempts",
    ("delivered", "retry", "dead"),
    "Reply delivery attempts by outcome",
    "deliveries",
    ("delivered", "dead"),
    "Reply deliveries ended, delivered or dead",
    "delivery_latency",
    (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0),
    "Reply stored to the receiver's 2xx answer",
)
# Generation (service.pipeline.generations): calls by outcome, groups ended by outcome, and the
# latency from the group's closure to its stored reply.
GENERATION = Calls(
    "generation_attempts",
    ("generated", "retry", "give_up"),
    "Reply generator calls by outcome",
    "generations",
    ("generated", "template", "failed"),
    "Closed groups given their reply, or failed",
    "generation_latency",
    (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0),
    "Group closed to its reply stored (generator or fallback)",
)


def count(client, name, amount=1):
    """Add to a pipeline counter; metrics never fail the work they describe."""
    try:
        client.hincrby(PIPELINE_KEY, name, amount)
    except redis.exceptions.RedisError as exc:
        log.warning("metrics_write_failed", extra={"reason": str(exc)})


def record(client, names, lateness=None, notice=None):
    """Add to several counters, observe a reply's lateness and publish a live notice, in
    one round trip; never fails the work it describes."""
    try:
        with client.pipeline(transaction=False) as pipe:
            queue(
                pipe,
                collections.Counter(names),
                lateness=() if lateness is None else (lateness,),
                notices=() if notice is None else (notice,),
            )
            pipe.execute()
    except redis.exceptions.RedisError as exc:
        log.warning("metrics_write_failed", extra={"reason": str(exc)})


def queue(pipe, counts, lateness=(), notices=()):
    """Queue on a pipeline: additions to counters ({name: amount}), observations of reply
    lateness (seconds; one HINCRBY per bucket hit, however many fall in it) and live notices
    ((channel, text) pairs). The caller executes the pipeline and handles its errors."""
    for name, amount in counts.items():
        if amount:
            pipe.hincrby(PIPELINE_KEY, name, amount)
    if lateness:
        _observe(pipe, "lateness", LATENESS_BUCKETS, lateness)
    for notice in notices:
        pipe.publish(*notice)


def record_call(client, calls, attempt, ended=None, latency=None, notice=None):
    """Count one outbound call of the kind `calls` (DELIVERY or GENERATION) by its `attempt`
    outcome, and the end of its work by `ended` when it ended ("delivered", "dead";
    "generated", "template", "failed"); observe `latency` (seconds) and publish a live notice,
    in one round trip; never fails the work it describes."""
    try:
        with client.pipeline(transaction=False) as pipe:
            pipe.hincrby(PIPELINE_KEY, f"{calls.attempts}_{attempt}", 1)
            if ended is not None:
                pipe.hincrby(PIPELINE_KEY, f"{calls.ended}_{ended}", 1)
            if latency is not None:
                _observe(pipe, calls.latency, calls.latency_buckets, [latency])
            if notice is not None:
                pipe.publish(*notice)
            pipe.execute()
    except redis.exceptions.RedisError as exc:
        log.warning("metrics_write_failed", extra={"reason": str(exc)})


def _observe(pipe, prefix, bounds, values):
    """Queue observations (a non-empty list) of a histogram kept as `<prefix>_le_<bound>`,
    `_sum`, `_count`: one HINCRBY per bucket hit, however many fall in it."""
    buckets = collections.Counter(next((b for b in bounds if v <= b), "inf") for v in values)
    for bucket, amount in buckets.items():
        pipe.hincrby(PIPELINE_KEY, f"{prefix}_le_{bucket}", amount)
    pipe.hincrbyfloat(PIPELINE_KEY, f"{prefix}_sum", sum(values))
    pipe.hincrby(PIPELINE_KEY, f"{prefix}_count", len(values))


def _histogram(raw, prefix, bounds):
    """The cumulative (bucket, count) pairs of a histogram kept as `<prefix>_le_<bound>`."""
    cumulative, buckets = 0, []
    for bound in (*bounds, "inf"):
        cumulative += int(raw.get(f"{prefix}_le_{bound}", 0))
        buckets.append(("+Inf" if bound == "inf" else str(bound), cumulative))
    return buckets


def _call_families(raw, calls):
    """The counters and latency histogram of one kind of outbound call (see Calls)."""
    attempts = CounterMetricFamily(calls.attempts, calls.attempts_help, labels=["outcome"])
    for outcome in calls.attempt_outcomes:
        attempts.add_metric([outcome], float(raw.get(f"{calls.attempts}_{outcome}", 0)))
    yield attempts
    ended = CounterMetricFamily(calls.ended, calls.ended_help, labels=["outcome"])
    for outcome in calls.ended_outcomes:
        ended.add_metric([outcome], float(raw.get(f"{calls.ended}_{outcome}", 0)))
    yield ended
    latency = HistogramMetricFamily(f"{calls.latency}_seconds", calls.latency_help)
    latency.add_metric(
        [],
        _histogram(raw, calls.latency, calls.latency_buckets),
        float(raw.get(f"{calls.latency}_sum", 0)),
    )
    yield latency


class PipelineCollector:
    """Reads the shared counters and the current gauges at scrape time."""

    def __init__(self, client, gauges):
        self.client = client
        self.gauges = gauges

    def collect(self):
        raw = {k.decode(): v.decode() for k, v in self.client.hgetall(PIPELINE_KEY).items()}
        for name, help_text in COUNTERS.items():
            family = CounterMetricFamily(f"pipeline_{name}", help_text)
            family.add_metric([], float(raw.get(name, 0)))
            yield family
        cumulative, buckets = 0, []
        for bound in (*LATENESS_BUCKETS, "inf"):
            cumulative += int(raw.get(f"lateness_le_{bound}", 0))
            buckets.append(("+Inf" if bound == "inf" else str(bound), cumulative))
        lateness = HistogramMetricFamily(
            "reply_lateness_seconds", "Reply time minus the end of its group's quiet window"
        )
        lateness.add_metric([], buckets, float(raw.get("lateness_sum", 0)))
        yield lateness
        yield from _call_families(raw, DELIVERY)
        yield from _call_families(raw, GENERATION)
        for name, (help_text, value) in self.gauges().items():
            gauge = GaugeMetricFamily(name, help_text)
            gauge.add_metric([], value)
            yield gauge


def render(client, gauges):
    """The /metrics body: this process's (or all gunicorn workers') metrics plus the pipeline's."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        from prometheus_client import REGISTRY

        body = generate_latest(REGISTRY)
    pipeline = CollectorRegistry()
    pipeline.register(PipelineCollector(client, gauges))
    return body + generate_latest(pipeline), CONTENT_TYPE_LATEST
