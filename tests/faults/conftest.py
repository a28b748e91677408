"""The fault suite's session: one private stage (PostgreSQL cluster, Redis, stall proxies,
the service's processes), and each fault's run done once, however many tests read it."""

import os

import pytest

from tests.faults import experiments
from tests.faults.deps import missing_tools
from tests.faults.harness import FULL, RESULTS, RUNTIME, FaultEnv


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


def pytest_terminal_summary(terminalreporter):
    if not RESULTS:
        return
    header = (
        "| fault | accepted | once | twice | never | merged/split | max lateness "
        "(outside faults) | 5xx | slowest request | verdict |"
    )
    lines = [header, "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in RESULTS.items():
        verdict = "; ".join(r.problems()) or "clean"
        lines.append(
            f"| {name} | {r.accepted} | {r.answered_once} | {r.answered_twice} | {r.never} | "
            f"{r.merged}/{r.split} | {r.max_lateness:.2f} s ({r.max_lateness_outside:.2f} s) "
            f"| {r.status_5xx} | {r.slowest:.2f} s | {verdict} |"
        )
    text = "\n".join(lines)
    (RUNTIME / ("results-full.md" if FULL else "results.md")).write_text(text + "\n")
    terminalreporter.write_sep("-", "fault suite figures (instance/faults/results*.md)")
    terminalreporter.write_line(text)
