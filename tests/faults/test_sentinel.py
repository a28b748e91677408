"""Redis behind Sentinel (1 master, 1 replica, 3 sentinels on private ports): a requested
failover (`SENTINEL FAILOVER`), then the new master SIGKILLed, under bursty traffic. Replication
is asynchronous, so each failover may drop the last writes (buffered groups, queued jobs); the
database is the record and the reconciliation re-arms what was lost (docs/reliability.md).

Checked in SQL afterwards, as every fault: every accepted message answered exactly once in its
exact group, in order, never early, within 10 s of the failover's end; no process exited. And
webhooks answered 503, always with Retry-After, only while no master was known (the fault's
window: from the command or the kill until every sentinel names the new master and it says it
is one), give or take SLACK for the processes to reconnect.
"""

import subprocess

import pytest

from tests.faults.conftest import stage
from tests.faults.experiments import POST, PRE
from tests.faults.harness import Run, describe
from tests.faults.sentinel import SentinelEnv
from tests.stack import BIN, ROOT

pytestmark = [pytest.mark.faults, pytest.mark.timeout(400)]

SLACK = 2.0  # seconds after the new master is known within which a 503 is still fair


@pytest.fixture(scope="module")
def sentinel_env():
    yield from stage(SentinelEnv())


@pytest.fixture(scope="module")
def failovers(sentinel_env):
    env = sentinel_env
    run = Run(env, "Sentinel failover, then master SIGKILLed").begin()
    run.at(PRE)
    with run.fault("SENTINEL FAILOVER"):
        # Sent to the last sentinel the service knows: the others learn of it later.
        first = env.set.failover(index=2)
    run.at(run.fault_end() - run.t0 + POST)
    # The demoted master must have caught up before it can be promoted in turn.
    env.set.wait_synced(env.set.replica())
    with run.fault("master SIGKILLed"):
        second = env.set.kill_master()
    run.at(run.fault_end() - run.t0 + POST)
    report = run.finish()
    return {"run": run, "report": report, "masters": (first.port, second.port)}


def test_every_message_answered_once_in_its_group_across_two_failovers(failovers):
    report = failovers["report"]
    print(describe(report))
    assert report.accepted > 0
    assert not report.problems(), describe(report)


def test_webhooks_get_503_with_retry_after_only_while_no_master_is_known(failovers):
    run = failovers["run"]
    unavailable = [a for a in run.sender.attempts if a.status == 503]
    outside = [
        a for a in unavailable if not any(w.start <= a.sent <= w.end + SLACK for w in run.windows)
    ]
    assert not outside, [(a.sent - run.t0, a.status) for a in outside]
    assert all(a.retry_after for a in unavailable)
    others = [a for a in run.sender.attempts if a.status is not None and a.status >= 500]
    assert others == unavailable, {a.status for a in others}


def test_the_service_follows_the_master_the_sentinels_name(failovers, sentinel_env):
    first, second = failovers["masters"]
    assert first != second
    assert sentinel_env.set.master().port == second
    status, _ = sentinel_env.readyz()
    assert status == 200


@pytest.mark.parametrize("role", ["worker", "scheduler"])
def test_container_health_checks_find_the_master(failovers, sentinel_env, role):
    env = sentinel_env.stack.env
    checked = subprocess.run(
        [str(BIN / "python"), "docker/healthcheck.py", role], cwd=ROOT, env=env, timeout=30
    )
    assert checked.returncode == 0
