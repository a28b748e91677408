"""`make run` (scripts/run.sh) as a user runs it: a requested stop is a clean exit, a process
that dies by itself is a failure, and the web listens on the loopback interface by default.

Each run is a real scripts/run.sh in a session of its own (so a signal to its process group is
what Ctrl-C in a terminal sends), on SQLite in a temporary directory and a Redis server of the
test's own: these tests touch neither test database, so `make test` runs them in a fault lane
(tests/lanes.py).
"""

import os
import signal
import subprocess
from pathlib import Path

import pytest
import requests

from tests.helpers import close_conversation, new_conversation, new_id, new_message, wait_for
from tests.stack import ROOT, children_of, free_port, stack_env

STOP_TIMEOUT = 60  # s: gunicorn's graceful stop plus the RQ worker's warm shutdown


def _reset_sigint():
    # A shell without job control starts background jobs with SIGINT ignored, and bash cannot
    # trap a signal ignored at entry: start the script as a terminal would.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _group_alive(pgid):
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def run_script(tmp_path, private_redis):
    """Start scripts/run.sh, with these variables added to the environment; returns (process,
    base URL, log path). Everything it started is killed afterwards, whatever the test did."""
    started = []

    def start(**extra):
        env = stack_env(
            f"sqlite:///{tmp_path / 'run.db'}",
            private_redis.url,
            strip=("API_TOKEN", "REPLY_", "DELIVERY_", "DEMO_RECEIVER"),
        )
        env |= extra
        del env["HOST"]  # the default of scripts/run.sh is under test
        env["RUN_PID_FILE"] = str(tmp_path / "run.pid")
        log = tmp_path / "run.log"
        with log.open("w") as out:
            process = subprocess.Popen(
                ["bash", "scripts/run.sh"],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_reset_sigint,
            )
        started.append(process)
        base = f"http://127.0.0.1:{env['PORT']}"

        def healthy():
            assert process.poll() is None, log.read_text()
            try:
                return requests.get(f"{base}/healthz", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_for(healthy, timeout=60, interval=0.2)
        return process, base, log

    yield start
    for process in started:
        if _group_alive(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _web_master(process):
    """The gunicorn master among the script's children (found once it is up)."""
    for pid in children_of(process.pid):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        if b"gunicorn" in cmdline:
            return pid
    raise AssertionError("no gunicorn child of scripts/run.sh")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_requested_stop_is_a_clean_exit(run_script, sig):
    process, _, log = run_script()

    os.killpg(process.pid, sig)
    code = process.wait(timeout=STOP_TIMEOUT)

    output = log.read_text()
    assert code == 0, output
    assert output.rstrip().endswith("run: stopped"), output
    assert "exited" not in output
    # Every process it started is gone: nothing is left holding the port or the database.
    wait_for(lambda: not _group_alive(process.pid), timeout=10)


def test_a_process_that_dies_by_itself_fails_the_run(run_script):
    process, base, log = run_script()

    os.kill(_web_master(process), signal.SIGKILL)
    code = process.wait(timeout=STOP_TIMEOUT)

    output = log.read_text()
    assert code != 0, output
    assert "run: the web process exited by itself" in output
    assert "run: stopped" not in output
    # The others (worker, scheduler) were stopped with it.
    wait_for(lambda: not _group_alive(process.pid), timeout=STOP_TIMEOUT)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{base}/healthz", timeout=1)


def test_the_web_listens_on_loopback_by_default(run_script):
    _, _, log = run_script()

    # gunicorn names the address it bound; 127.0.0.1 is not reachable from other machines.
    assert "Listening at: http://127.0.0.1:" in log.read_text()


def _commands(process):
    """The command lines of the script's children."""
    found = []
    for pid in children_of(process.pid):
        try:
            found.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            pass
    return found


@pytest.mark.parametrize("delivery", [False, True], ids=["delivery-off", "delivery-on"])
def test_a_delivery_worker_runs_only_with_delivery_on(run_script, delivery):
    extra = {}
    if delivery:
        extra = {
            "REPLY_WEBHOOK_URL": "http://127.0.0.1:9/hooks",
            "REPLY_WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        }
    process, _, log = run_script(**extra)

    def workers():
        commands = [c for c in _commands(process) if " worker" in c]
        return commands if any(c.rstrip().endswith("flask worker") for c in commands) else None

    found = wait_for(workers, timeout=30)
    if delivery:
        wait_for(lambda: any("worker --queue deliveries" in c for c in _commands(process)))
    else:
        assert not any("--queue" in c for c in found), found
    # The reference receiver runs only when asked for (DEMO_RECEIVER=1).
    assert not any("scripts.receiver" in c for c in _commands(process))
    assert process.poll() is None, log.read_text()


def test_demo_receiver_gets_the_replies_and_answers_this_runs_console(run_script):
    receiver_port, control_port = free_port(), free_port()
    process, base, log = run_script(
        DEMO_RECEIVER="1",
        DEMO_RECEIVER_PORT=str(receiver_port),
        DEMO_RECEIVER_CONTROL_PORT=str(control_port),
        # Ignored: the demo's receiver takes the replies.
        REPLY_WEBHOOK_URL="http://127.0.0.1:9/elsewhere",
        REPLY_WEBHOOK_SECRET="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    )
    control = f"http://127.0.0.1:{control_port}/"
    conversation_id = new_id()
    for event in (
        new_conversation(conversation_id),
        new_message(new_id(), conversation_id),
        close_conversation(conversation_id),
    ):
        assert requests.post(f"{base}/webhook/", json=event, timeout=10).ok

    def received():
        events = requests.get(control + "events", timeout=5).json()["events"]
        return [e for e in events if e["event"] == "received"]

    [got] = wait_for(received, timeout=30)
    assert got["conversation_id"] == conversation_id and got["verified"] is True
    reply = requests.get(f"{base}/conversations/{conversation_id}/", timeout=10).json()
    assert reply["messages"][-1]["id"] == got["reply_id"]
    wait_for(lambda: reply_delivered(base, conversation_id), timeout=30)
    # The console of this run (its PORT, by either name) may drive the receiver.
    for origin in (base, base.replace("127.0.0.1", "localhost")):
        answer = requests.get(control + "state", headers={"Origin": origin}, timeout=5)
        assert answer.headers["Access-Control-Allow-Origin"] == origin
    output = log.read_text()
    assert "replies go to the reference receiver, not to http://127.0.0.1:9/elsewhere" in output
    assert f"control API on http://127.0.0.1:{control_port}/" in output


def reply_delivered(base, conversation_id):
    messages = requests.get(f"{base}/conversations/{conversation_id}/", timeout=10).json()
    return messages["messages"][-1]["delivery"]["status"] == "delivered"


def test_reset_refuses_while_the_service_runs(run_script, tmp_path):
    """`make reset` must not delete the database under a running service (and does once it
    stopped). Run on a copy of the Makefile in a scratch directory, so that a reset that
    wrongly goes ahead deletes a stand-in, never a real local database."""
    process, _, _ = run_script()
    scratch = tmp_path / "scratch"
    (scratch / "instance").mkdir(parents=True)
    (scratch / "Makefile").write_bytes((ROOT / "Makefile").read_bytes())
    database = scratch / "instance" / "conversations.db"
    database.write_text("stand-in")
    env = {**os.environ, "RUN_PID_FILE": str(tmp_path / "run.pid")}

    refused = subprocess.run(["make", "-s", "reset"], cwd=scratch, env=env, capture_output=True)
    assert refused.returncode != 0
    assert "stop it first" in refused.stderr.decode()
    assert database.exists()

    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=STOP_TIMEOUT)
    done = subprocess.run(["make", "-s", "reset"], cwd=scratch, env=env, capture_output=True)
    assert done.returncode == 0, done.stderr
    assert not database.exists()
