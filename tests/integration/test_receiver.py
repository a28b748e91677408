"""The reference receiver (scripts/receiver.py) as a real process, fed events signed with the
standardwebhooks library as the service signs its deliveries: it verifies, dedupes on
webhook-id, prints JSON lines, fails, is slow or is down when told, and stops cleanly."""

import base64
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from standardwebhooks import Webhook

from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
SECRET = "whsec_" + base64.b64encode(b"reference receiver test secret!!").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"a secret the receiver does not know").decode()
DEADLINE = 10.0


class Receiver:
    """A receiver process started with `--json --port 0`; its JSON lines arrive in `lines`."""

    def __init__(self, *args, secret=SECRET):
        command = [sys.executable, "-m", "scripts.receiver", "--port", "0", "--json"]
        if secret is not None:
            command += ["--secret", secret]
        self.process = subprocess.Popen(
            [*command, *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "REPLY_WEBHOOK_SECRET": ""},
        )
        self.lines = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.url = self.control = None

    def _read(self):
        for line in self.process.stdout:
            self.lines.put(json.loads(line))
        self.lines.put(None)

    def next_line(self, event):
        """The next JSON line, which must be of the kind `event` (within the deadline)."""
        try:
            line = self.lines.get(timeout=DEADLINE)
        except queue.Empty:
            pytest.fail(f"no {event!r} line within {DEADLINE} s: {self.process.stderr}")
        assert line is not None, f"receiver exited: {self.process.stderr.read()}"
        assert line["event"] == event, line
        return line

    def listening(self):
        line = self.next_line("listening")
        self.url, self.control = line["url"], line.get("control_url")
        return self

    def state(self, **headers):
        return requests.get(self.control + "state", headers=headers, timeout=DEADLINE)

    def change(self, settings, **headers):
        """PATCH /state with `settings`; the answer."""
        return requests.patch(
            self.control + "state", json=settings, headers=headers, timeout=DEADLINE
        )

    def events(self, after=0):
        answer = requests.get(self.control + f"events?after={after}", timeout=DEADLINE)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def stop(self, sig=signal.SIGTERM):
        """Stop it with `sig`; (exit code, the JSON lines it printed since the last read)."""
        self.process.send_signal(sig)
        code = self.process.wait(timeout=DEADLINE)
        self.reader.join(timeout=DEADLINE)
        rest = []
        while (line := self.lines.get_nowait()) is not None:
            rest.append(line)
        return code, rest


@pytest.fixture
def start():
    """Start receivers with the given options (listening); each is stopped after the test."""
    started = []

    def run(*args, secret=SECRET, wait=True):
        receiver = Receiver(*args, secret=secret)
        started.append(receiver)
        return receiver.listening() if wait else receiver

    yield run
    for receiver in started:
        if receiver.process.poll() is None:
            receiver.process.kill()
            receiver.process.wait()
        for stream in (receiver.process.stdout, receiver.process.stderr):
            stream.close()


def reply_event(conversation_id=None, created_at=None, content="Thanks, we got it.\n"):
    created_at = created_at or datetime.now(UTC)
    return {
        "type": "reply.created",
        "timestamp": datetime.now(UTC).isoformat(),
        "data": {
            "conversation_id": conversation_id or str(uuid.uuid4()),
            "reply_id": str(uuid.uuid4()),
            "content": content,
            "message_ids": [str(uuid.uuid4()), str(uuid.uuid4())],
            "created_at": created_at.isoformat(),
        },
    }


def post(
    url, event, secrets=(SECRET,), webhook_id=None, at=None, timeout=DEADLINE, client=requests
):
    """POST `event` as the service does: webhook-id (default: the reply id), the attempt's
    webhook-timestamp, and the space-separated signatures of every secret; through `client`
    (a requests.Session keeps its connection between calls, as the service's does)."""
    body = json.dumps(event)
    webhook_id = webhook_id or event["data"]["reply_id"]
    at = at or datetime.now(UTC)
    headers = {
        "Content-Type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": " ".join(Webhook(s).sign(webhook_id, at, body) for s in secrets),
    }
    return client.post(url, data=body.encode(), headers=headers, timeout=timeout)


def test_a_signed_reply_is_answered_200_and_printed_once(start):
    receiver = start()
    event = reply_event()

    answer = post(receiver.url, event)

    assert answer.status_code == 200
    line = receiver.next_line("received")
    data = event["data"]
    assert line["webhook_id"] == data["reply_id"] == line["reply_id"]
    assert line["conversation_id"] == data["conversation_id"]
    assert line["content"] == data["content"]
    assert line["message_ids"] == data["message_ids"]
    assert line["type"] == "reply.created"
    assert line["in_order"] is True
    assert 0 <= line["latency_seconds"] < DEADLINE
    code, rest = receiver.stop()
    assert code == 0
    assert rest == [{**rest[0], "event": "stopped", "received": 1, "duplicate": 0, "rejected": 0}]


def test_a_repeated_webhook_id_is_answered_200_and_printed_as_duplicate(start):
    receiver = start()
    event = reply_event()
    assert post(receiver.url, event).status_code == 200
    receiver.next_line("received")

    # A retry: same webhook-id and data, signed again at a later attempt time.
    retry = {**event, "timestamp": datetime.now(UTC).isoformat()}
    answer = post(receiver.url, retry, at=datetime.now(UTC) + timedelta(seconds=3))

    assert answer.status_code == 200
    assert answer.json() == {"received": True, "duplicate": True}
    line = receiver.next_line("duplicate")
    assert (line["webhook_id"], line["times"], line["changed"]) == (
        event["data"]["reply_id"],
        2,
        False,
    )
    changed = {**event, "data": {**event["data"], "content": "something else"}}
    assert post(receiver.url, changed).status_code == 200
    assert receiver.next_line("duplicate")["changed"] is True
    code, rest = receiver.stop()
    assert code == 0
    assert [(r["event"], r["received"], r["duplicate"]) for r in rest] == [("stopped", 1, 2)]


@pytest.mark.parametrize(
    "how, reason",
    [
        ("other secret", "No matching signature found"),
        ("stale timestamp", "Message timestamp too old"),
        ("no signature", "Missing required headers"),
        ("tampered body", "No matching signature found"),
        ("malformed signature", "malformed webhook-signature"),
    ],
)
def test_a_request_that_does_not_verify_is_answered_401(start, how, reason):
    receiver = start()
    event = reply_event()
    body = json.dumps(event)
    if how == "other secret":
        answer = post(receiver.url, event, secrets=(OTHER_SECRET,))
    elif how == "stale timestamp":
        answer = post(receiver.url, event, at=datetime.now(UTC) - timedelta(minutes=10))
    elif how == "no signature":
        answer = requests.post(receiver.url, data=body, timeout=DEADLINE)
    else:
        stamp = str(int(time.time()))
        signature = Webhook(SECRET).sign(event["data"]["reply_id"], datetime.now(UTC), body)
        if how == "tampered body":
            body = body.replace("Thanks", "Thank")
        else:
            signature = "v1" + signature.removeprefix("v1,")
        headers = {
            "webhook-id": event["data"]["reply_id"],
            "webhook-timestamp": stamp,
            "webhook-signature": signature,
        }
        answer = requests.post(receiver.url, data=body, headers=headers, timeout=DEADLINE)

    assert answer.status_code == 401
    assert receiver.next_line("rejected") | {"at": None} == {
        "at": None,
        "event": "rejected",
        "status": 401,
        "reason": reason,
    }
    # Not recorded: the same webhook-id, signed right, is new.
    assert post(receiver.url, event).status_code == 200
    assert receiver.next_line("received")["webhook_id"] == event["data"]["reply_id"]


def test_any_of_several_secrets_verifies_as_while_rotating(start):
    receiver = start(secret=f"{OTHER_SECRET},{SECRET}")

    assert post(receiver.url, reply_event(), secrets=(SECRET,)).status_code == 200
    assert post(receiver.url, reply_event(), secrets=(OTHER_SECRET, SECRET)).status_code == 200
    assert receiver.next_line("received") and receiver.next_line("received")


def test_status_with_retry_after_fails_every_verified_event(start):
    receiver = start("--status", "503", "--retry-after", "7")
    event = reply_event()

    answer = post(receiver.url, event)

    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "7"
    line = receiver.next_line("failed")
    assert (line["status"], line["retry_after"], line["webhook_id"]) == (
        503,
        7,
        event["data"]["reply_id"],
    )
    # A signature check still comes first.
    assert post(receiver.url, event, secrets=(OTHER_SECRET,)).status_code == 401
    code, rest = receiver.stop()
    assert [(r["event"], r["received"], r["failed"]) for r in rest[1:]] == [("stopped", 0, 1)]


def test_fail_rate_fails_a_share_and_the_retry_is_not_a_duplicate(start):
    receiver = start("--fail-rate", "0.5", "--status", "429", "--seed", "7")
    statuses = {}
    for _ in range(20):
        event = reply_event()
        statuses[event["data"]["reply_id"]] = post(receiver.url, event).status_code
    failed = [reply_id for reply_id, status in statuses.items() if status == 429]

    assert set(statuses.values()) == {200, 429}
    code, rest = receiver.stop()
    stopped = rest[-1]
    assert (stopped["received"], stopped["failed"]) == (20 - len(failed), len(failed))
    assert [r["webhook_id"] for r in rest if r["event"] == "failed"] == failed


def test_slow_answers_after_the_given_seconds(start):
    receiver = start("--slow", "1.5")
    started = time.monotonic()

    answer = post(receiver.url, reply_event())

    assert answer.status_code == 200
    assert time.monotonic() - started >= 1.5
    # A sender that gives up first (the service's timeout) finds the event recorded anyway:
    # its retry is a duplicate.
    event = reply_event()
    with pytest.raises(requests.Timeout):
        post(receiver.url, event, timeout=0.5)
    assert post(receiver.url, event).status_code == 200
    for kind in ("received", "received", "duplicate"):
        receiver.next_line(kind)


def test_down_for_refuses_connections_then_accepts(start):
    receiver = start("--down-for", "3", wait=False)
    down = receiver.next_line("down")

    with pytest.raises(requests.ConnectionError):
        post(down["url"], reply_event())
    receiver.listening()
    assert receiver.url == down["url"]
    assert post(receiver.url, reply_event()).status_code == 200


def test_a_reply_older_than_one_received_is_flagged_out_of_order(start):
    receiver = start()
    conversation = str(uuid.uuid4())
    now = datetime.now(UTC)
    post(receiver.url, reply_event(conversation, created_at=now))
    post(receiver.url, reply_event(conversation, created_at=now - timedelta(seconds=1)))
    post(receiver.url, reply_event(created_at=now - timedelta(seconds=2)))

    assert [receiver.next_line("received")["in_order"] for _ in range(3)] == [True, False, True]


def test_ctrl_c_stops_it_cleanly(start):
    receiver = start()
    post(receiver.url, reply_event())

    code, rest = receiver.stop(signal.SIGINT)

    assert code == 0
    assert [r["event"] for r in rest] == ["received", "stopped"]
    assert "Traceback" not in receiver.process.stderr.read()


def test_readable_output_shows_the_reply():
    process = subprocess.Popen(
        [sys.executable, "-m", "scripts.receiver", "--port", "0", "--secret", SECRET],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = process.stdout.readline().split("listening on ")[1].split()[0]
        event = reply_event(content="Line one\nline two\n")
        assert post(url, event).status_code == 200
        lines = [process.stdout.readline() for _ in range(4)]
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=DEADLINE)

    data = event["data"]
    assert (
        f"reply.created  reply {data['reply_id']} conversation {data['conversation_id']}"
        in (lines[0])
    )
    assert "answers 2 message(s)" in lines[1]
    assert [line.strip() for line in lines[2:]] == ["| Line one", "| line two"]
    assert "stopped: 1 received, 0 duplicate, 0 failed, 0 rejected" in output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--secret", "s3cret"], "whsec_"),
        (["--secret", "whsec_not base64!"], "whsec_"),
        (["--status", "200"], "--status"),
        (["--retry-after", "5"], "--retry-after"),
        (["--fail-rate", "2"], "--fail-rate"),
        (["--control-port", "0", "--allow-origin", "127.0.0.1:8000"], "--allow-origin"),
        (["--control-port", "0", "--allow-origin", "http://h:1/ui/"], "--allow-origin"),
    ],
)
def test_bad_options_exit_2(args, message):
    result = subprocess.run(
        [sys.executable, "-m", "scripts.receiver", "--port", "0", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )

    assert result.returncode == 2
    assert message in result.stderr


def test_without_a_secret_one_is_made_and_the_service_command_printed(start):
    receiver = start(secret=None)

    line = receiver.process.stderr.readline()
    assert line.startswith("No --secret")
    command = receiver.process.stderr.readline() and receiver.process.stderr.readline()
    secret = command.split("REPLY_WEBHOOK_SECRET=")[1].split()[0]
    assert f"REPLY_WEBHOOK_URL={receiver.url} " in command
    assert post(receiver.url, reply_event(), secrets=(secret,)).status_code == 200


def test_the_wrapper_runs_without_an_activated_virtualenv(tmp_path):
    # From another directory, with only the system's programs on PATH (scripts/flask's way).
    result = subprocess.run(
        [str(ROOT / "scripts" / "receiver"), "--help"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: scripts/receiver")
    assert "--retry-after" in result.stdout


# --- the control API (--control-port), as the console's simulator uses it ------------------

CONSOLE = "http://127.0.0.1:8123"


def test_control_fails_the_next_n_events_then_accepts(start):
    receiver = start("--control-port", "0")
    event = reply_event()

    answer = receiver.change({"fail_next": 2, "fail_status": 503, "retry_after": 3})

    assert answer.status_code == 200
    assert answer.json() | {"counts": None, "last": None, "url": None} == {
        "url": None,
        "down": False,
        "back_at": None,
        "fail_next": 2,
        "fail_status": 503,
        "fail_rate": 0.0,
        "retry_after": 3,
        "slow": 0.0,
        "counts": None,
        "last": None,
    }
    assert receiver.next_line("control")["changes"] == {
        "fail_next": 2,
        "fail_status": 503,
        "retry_after": 3,
    }
    first, second, third = (post(receiver.url, event) for _ in range(3))
    assert [first.status_code, second.status_code, third.status_code] == [503, 503, 200]
    assert first.headers["Retry-After"] == "3"
    assert post(receiver.url, event).status_code == 200
    page = receiver.events()
    got = [e for e in page["events"] if e["event"] in ("failed", "received", "duplicate")]
    assert [(e["event"], e["status"], e["verified"], e["duplicate"]) for e in got] == [
        ("failed", 503, True, False),
        ("failed", 503, True, False),
        ("received", 200, True, False),
        ("duplicate", 200, True, True),
    ]
    assert {e["webhook_id"] for e in got} == {event["data"]["reply_id"]}
    assert got[2]["content"] == event["data"]["content"]
    assert page["state"]["fail_next"] == 0
    assert page["state"]["counts"] == {"received": 1, "duplicate": 1, "failed": 2, "rejected": 0}
    assert page["last"] == page["events"][-1]["n"] == page["state"]["last"]
    # Numbered in order; after=N reads only what is newer.
    numbers = [e["n"] for e in page["events"]]
    assert numbers == sorted(numbers)
    assert receiver.events(after=page["last"])["events"] == []
    assert [e["event"] for e in receiver.events(after=numbers[-2])["events"]] == ["duplicate"]


def test_control_rejections_are_listed_as_not_verified(start):
    receiver = start("--control-port", "0")

    assert post(receiver.url, reply_event(), secrets=(OTHER_SECRET,)).status_code == 401

    [rejected] = [e for e in receiver.events()["events"] if e["event"] == "rejected"]
    assert (rejected["status"], rejected["verified"], rejected["duplicate"]) == (401, False, False)


def test_control_down_refuses_connections_and_cuts_kept_alive_ones(start):
    receiver = start("--control-port", "0")
    sender = requests.Session()  # keeps its connection, as the service's does
    event = reply_event()
    assert post(receiver.url, event, client=sender).status_code == 200

    answer = receiver.change({"down": True})

    # Answered once the port is closed: nothing gets through from then on.
    assert answer.status_code == 200 and answer.json()["down"] is True
    assert answer.json()["back_at"] is None
    for client in (sender, requests):
        with pytest.raises(requests.ConnectionError):
            post(receiver.url, reply_event(), client=client)
    assert receiver.change({"down": False}).json()["down"] is False
    # Back on the same port, remembering what it got before.
    answer = post(receiver.url, event, client=sender)
    assert answer.status_code == 200 and answer.json()["duplicate"] is True
    kinds = [e["event"] for e in receiver.events()["events"]]
    assert kinds == [
        "listening",
        "received",
        "control",
        "down",
        "control",
        "listening",
        "duplicate",
    ]


def test_control_down_for_comes_back_by_itself(start):
    receiver = start("--control-port", "0")

    state = receiver.change({"down_for": 1}).json()

    assert state["down"] is True
    assert datetime.fromisoformat(state["back_at"]) > datetime.now(UTC)
    with pytest.raises(requests.ConnectionError):
        post(receiver.url, reply_event())
    wait_for(lambda: receiver.state().json()["down"] is False, timeout=DEADLINE)
    wait_for(lambda: post(receiver.url, reply_event()).status_code == 200, timeout=DEADLINE)


def test_control_slow_answers_after_the_given_seconds(start):
    receiver = start("--control-port", "0")
    receiver.change({"slow": 1})
    started = time.monotonic()

    assert post(receiver.url, reply_event()).status_code == 200
    assert time.monotonic() - started >= 1
    receiver.change({"slow": 0})
    started = time.monotonic()
    assert post(receiver.url, reply_event()).status_code == 200
    assert time.monotonic() - started < 1


def test_going_down_mid_answer_never_answers_and_the_retry_is_a_duplicate(start):
    receiver = start("--control-port", "0", "--slow", "30")
    event = reply_event()
    answers = queue.Queue()

    def send():
        try:
            answers.put(post(receiver.url, event).status_code)
        except requests.ConnectionError as exc:
            answers.put(exc)

    threading.Thread(target=send, daemon=True).start()
    wait_for(lambda: receiver.state().json()["counts"]["received"] == 1, timeout=DEADLINE)
    receiver.change({"down": True})

    assert isinstance(answers.get(timeout=DEADLINE), requests.ConnectionError)
    receiver.change({"down": False, "slow": 0})
    assert post(receiver.url, event).json() == {"received": True, "duplicate": True}


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"fail_next": 2, "fail_status": 200}, "fail_status must be an integer in 300..599"),
        ({"fail_next": -1}, "fail_next must be an integer"),
        ({"fail_next": True}, "fail_next must be an integer"),
        ({"fail_rate": 1.5}, "fail_rate must be a number in 0..1"),
        ({"slow": "2"}, "slow must be a number"),
        ({"down": "yes"}, "down must be true or false"),
        ({"down_for": 0}, "down_for must be a number above 0"),
        ({"down": True, "down_for": 5}, "not both"),
        ({"fail": 1}, "unknown setting(s) fail"),
        ([1], "must be a JSON object"),
    ],
)
def test_control_refuses_bad_settings_and_changes_nothing(start, settings, message):
    receiver = start("--control-port", "0")
    before = receiver.state().json()

    answer = receiver.change(settings)

    assert answer.status_code == 400
    assert answer.json()["error"] == "bad_request"
    assert message in answer.json()["message"]
    assert receiver.state().json() == before


def test_control_answers_400_to_a_body_that_is_not_json(start):
    receiver = start("--control-port", "0")
    answer = requests.patch(receiver.control + "state", data=b"{nope", timeout=DEADLINE)
    assert answer.status_code == 400
    assert requests.get(receiver.control + "events?after=x", timeout=DEADLINE).status_code == 400
    assert requests.get(receiver.control + "nothing", timeout=DEADLINE).status_code == 404


def test_control_allows_the_console_origin_and_refuses_others(start):
    receiver = start("--control-port", "0", "--allow-origin", CONSOLE)

    preflight = requests.options(
        receiver.control + "state",
        headers={
            "Origin": CONSOLE,
            "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "content-type",
        },
        timeout=DEADLINE,
    )
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == CONSOLE
    assert "PATCH" in preflight.headers["Access-Control-Allow-Methods"]
    assert preflight.headers["Access-Control-Allow-Headers"].lower() == "content-type"
    answer = receiver.change({"fail_next": 1}, Origin=CONSOLE)
    assert answer.status_code == 200
    assert answer.headers["Access-Control-Allow-Origin"] == CONSOLE

    # Another page, even the default console's once --allow-origin is given, is refused.
    for origin in ("http://evil.example", "http://127.0.0.1:8000", "null"):
        refused = receiver.change({"fail_next": 5}, Origin=origin)
        assert refused.status_code == 403, origin
        assert refused.json()["error"] == "origin_not_allowed"
        assert "Access-Control-Allow-Origin" not in refused.headers
    # A page that rebound its own name to 127.0.0.1 sends that name as Host.
    rebound = receiver.state(Host="evil.example:9001")
    assert rebound.status_code == 403 and rebound.json()["error"] == "host_not_allowed"
    assert receiver.state().json()["fail_next"] == 1


def test_control_allows_the_console_of_make_run_by_default(start):
    receiver = start("--control-port", "0")
    for origin in ("http://127.0.0.1:8000", "http://localhost:8000"):
        answer = receiver.state(Origin=origin)
        assert answer.headers["Access-Control-Allow-Origin"] == origin


def test_readable_output_shows_what_it_was_told():
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "scripts.receiver",
            "--port",
            "0",
            "--control-port",
            "0",
            "--secret",
            SECRET,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        control = line.split("control API on ")[1].split(")")[0]
        requests.patch(control + "state", json={"fail_next": 2, "down": True}, timeout=DEADLINE)
        lines = [process.stdout.readline() for _ in range(2)]
    finally:
        process.terminate()
        process.communicate(timeout=DEADLINE)

    assert "told       fail_next=2, down=True" in lines[0]
    assert "refuses connections until told to come back" in lines[1]
