"""The nine numbered scenarios of issue 11, each as an exact reproduction of its timeline.

Scenario 1 has a run of its own; the others run, on conversations of their own, inside the
run of the fault they need (tests/faults/experiments.py), and check their own figures here.
"""

import pytest

from tests.faults import checker
from tests.faults.harness import describe

pytestmark = [pytest.mark.faults, pytest.mark.timeout(400)]


def test_scenario_1_failed_flush_does_not_starve_a_busy_conversation(experiment):
    """Message at 0, PostgreSQL stopped at 1 and started at 8, then a message every 6.5 s:
    the first group within 10 s of the restart, every later one on time."""
    result = experiment("scenario_1")
    report = result["report"]
    assert report.replies >= 3, describe(report)
    assert not report.problems(), f"{describe(report)}\nreplies: {result['replies']}"


def test_scenario_2_flushall_between_two_groups_gives_two_replies(experiment):
    """m1 at 0, FLUSHALL at 3, m2 at 6.5: two replies, [m1] and [m2], [m2] on time."""
    result = experiment("flushall")
    two = result["two"]
    assert [ids for ids, _ in two["replies"]] == two["ids"], two
    first, second = (at for _, at in two["replies"])
    assert first <= result["flushed"] + checker.AFTER_FAULT
    assert second - (result["m2_at"] + 5) <= checker.ON_TIME, two


def test_scenario_3_periodic_jobs_survive_a_flushall(experiment):
    """After FLUSHALL: a message sent 2 s before is answered (within 10 s of its due), a
    held message expires, /readyz is ready again, with no manual step."""
    result = experiment("flushall")
    after = result["after"]
    assert result["held_accepted"], "the held message was not accepted"
    assert after["answered"] is not None and after["answered"] <= 3 + checker.AFTER_FAULT, after
    assert after["expired"] is not None and after["expired"] <= checker.AFTER_FAULT, (
        f"held message {result['held_status']}; {after}"
    )
    assert after["ready"] is not None and after["ready"] <= checker.AFTER_FAULT, after


def test_scenario_4_a_redis_restart_kills_no_process(experiment):
    """Redis away 2 s: worker and scheduler ride it out; nothing is left unanswered."""
    report = experiment("redis_restart")["report"]
    assert report.exited == [], describe(report)
    assert report.never == 0, describe(report)


def test_scenario_5_no_stale_connections_after_postgresql_returns(experiment):
    """Once PostgreSQL is back (1 s grace), no webhook gets a 5xx."""
    result = experiment("postgres_stop")
    assert result["after_requests"] > 0
    assert result["after_5xx"] == 0, (
        f"{result['after_5xx']} of {result['after_requests']} requests after the restart got"
        f" 5xx, at +{result['after_5xx_at']} s"
    )


def test_scenario_6_worker_down_over_a_minute(experiment):
    """Worker down 65 s (90 s full): after its restart a group whose buffer keys were lost
    is answered and a held message expires within 10 s; /readyz said not ready meanwhile."""
    result = experiment("worker_down")
    after = result["after"]
    assert result["dropped_keys"], "the lost group's buffer keys were not found"
    assert after["answered"] is not None and after["answered"] <= checker.AFTER_FAULT, after
    assert after["expired"] is not None and after["expired"] <= checker.AFTER_FAULT, (
        f"held message {result['held_status']}; {after}"
    )
    not_ready = [t for t, status in result["readyz"] if status != 200]
    assert not_ready, f"/readyz said ready throughout the outage: {result['readyz']}"


def _bounded(probes):
    return [
        (status, round(seconds, 2))
        for status, seconds in probes
        if status is None or (status >= 500 and status != 503) or seconds > checker.SLOW_REQUEST
    ]


def test_scenario_7_stalled_dependencies_fail_fast(experiment):
    """Stalls (not refusals) of Redis after /readyz ran, and of PostgreSQL: webhooks and
    /readyz answer within 10 s (503 with Retry-After, or accepted); no process exits."""
    redis_stall = experiment("redis_stall")
    pg_stall = experiment("postgres_stall")
    problems = []
    for name, result in (("Redis", redis_stall), ("PostgreSQL", pg_stall)):
        if slow := _bounded(result["probes"]):
            problems.append(f"{name} stall: {len(slow)} of {len(result['probes'])} webhooks {slow}")
        if result["report"].exited:
            problems.append(f"{name} stall: processes exited {result['report'].exited}")
    status, seconds = pg_stall["readyz"] or (None, None)
    if status is None or seconds > checker.SLOW_REQUEST:
        problems.append(f"PostgreSQL stall: /readyz {pg_stall['readyz']}")
    assert problems == [], "\n".join(problems)


def test_scenario_8_a_scheduler_lock_left_behind_delays_nothing(experiment):
    """`SET rq:scheduler_lock x EX 10 NX` 4.5 s after a message, two schedulers running: the
    reply by 6.5 s after the message, and no flood of "Lock already taken" warnings."""
    result = experiment("two_and_two")
    assert result["lock_set"]
    [(ids, at), *_] = result["replies"] or [(None, None)]
    assert ids == result["ids"], result["replies"]
    assert at - result["message_at"] <= 5 + checker.ON_TIME, at - result["message_at"]
    assert result["lock_warnings"] <= 20, f"{result['lock_warnings']} lock warnings in 10 s"


def test_scenario_9_a_graceful_reload_keeps_the_metrics(experiment):
    """Two SIGHUPs under load: every message answered once, webhook_events_total never
    goes down."""
    result = experiment("reload_web")
    report = result["report"]
    assert report.never == 0 and report.answered_twice == 0, describe(report)
    assert result["samples"] > 0
    assert result["drops"] == [], (
        f"webhook_events_total went down {len(result['drops'])} time(s): {result['drops'][:3]}"
        f" (peak {result['peak']}, final {result['final']})"
    )
