"""One fault each, under bursty traffic over ~30 conversations, checked in SQL afterwards:
every accepted message answered exactly once in the group its arrival time gives, in order,
never early, on time outside the fault and within 10 s of its end, no HTTP answer over 10 s,
and no process dying on its own."""

import pytest

from tests.faults.harness import describe

pytestmark = [pytest.mark.faults, pytest.mark.timeout(400)]


def check(result, more=()):
    report = result["report"]
    print(describe(report))
    assert not [*report.problems(), *more], "\n".join([describe(report), *more])


def test_worker_killed_mid_flush(experiment):
    check(experiment("worker_kill"))


def test_scheduler_killed(experiment):
    check(experiment("scheduler_kill"))


def test_gunicorn_worker_killed(experiment):
    check(experiment("web_worker_kill"))


def test_postgresql_stopped_10s(experiment):
    check(experiment("postgres_stop"))


def test_redis_restarted_empty(experiment):
    check(experiment("redis_restart"))


def test_flushall(experiment):
    check(experiment("flushall"))


def test_postgresql_stalled(experiment):
    check(experiment("postgres_stall"))


def test_redis_stalled(experiment):
    check(experiment("redis_stall"))


def test_worker_down_over_a_minute(experiment):
    check(experiment("worker_down"))


def test_two_workers_two_schedulers(experiment):
    check(experiment("two_and_two"))


def test_graceful_reload_under_load(experiment):
    result = experiment("reload_web")
    drops = result["drops"]
    check(result, [f"webhook_events_total went down: {drops}"] if drops else [])
