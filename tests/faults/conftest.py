"""The fault suite's session: one private stage (PostgreSQL cluster, Redis, stall proxies,
the service's processes), and each fault's run done once, however many tests read it."""

import os

import pytest

from tests.faults import experiments
from tests.faults.deps import missing_tools
from tests.faults.harness import RESULT_ROWS, RESULTS, FaultEnv, result_rows, write_results


def stage(env):
    """Start `env` (a FaultEnv), yield it, stop it; skipped where the tools are missing (a
    failure in CI)."""
    missing = missing_tools()
    if missing:
        why = f"the fault suite needs {', '.join(missing)}"
        if os.environ.get("CI"):
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    try:
        env.start()
        yield env
    finally:
        env.stop()


@pytest.fixture(scope="session")
def faults_env():
    yield from stage(FaultEnv())


@pytest.fixture(scope="session")
def experiment(faults_env):
    """experiment(name) runs `experiments.<name>` once per session and returns its result."""
    done = {}

    def run(name):
        if name not in done:
            try:
                done[name] = getattr(experiments, name)(faults_env)
            except Exception as exc:
                faults_env.dirty = True
                done[name] = exc
        if isinstance(done[name], Exception):
            raise done[name]
        return done[name]

    return run


def pytest_sessionfinish(session):
    """Under `pytest -n`, hand this lane's figures to the controller (tests/conftest.py prints
    every lane's)."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None and RESULTS:
        workeroutput[RESULT_ROWS] = result_rows(RESULTS)


def pytest_terminal_summary(terminalreporter, config):
    if RESULTS and not hasattr(config, "workerinput"):
        write_results(terminalreporter, result_rows(RESULTS))
