"""Unit tests for scripts/replay.py (no network beyond an in-process fake server)."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from scripts import replay

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
SHIPPED = {
    "single",
    "burst",
    "steady",
    "two-bursts",
    "out-of-order",
    "out-of-order-expired",
    "close",
    "sent-direction",
}


# --------------------------------------------------------------------------------------------
# In-process fake service: replies instantly instead of after 5 s
# --------------------------------------------------------------------------------------------


@dataclass
class FakeState:
    conversations: dict[str, dict] = field(default_factory=dict)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle_event(self, event: dict) -> tuple[int, dict]:
        kind, data, stamp = event["type"], event["data"], event["timestamp"]
        if kind == "NEW_CONVERSATION":
            self.conversations[data["id"]] = {
                "id": data["id"],
                "status": "OPEN",
                "created_at": stamp,
                "updated_at": stamp,
                "messages": [],
            }
            return 201, {"id": data["id"]}
        conv = self.conversations.get(data.get("conversation_id") or data["id"])
        if kind == "CLOSE_CONVERSATION":
            conv["status"] = "CLOSED"
            return 200, {"id": data["id"]}
        if conv is None:
            return 202, {"id": data["id"]}
        if conv["status"] == "CLOSED":
            return 400, {"code": 400, "error": "conversation_closed"}
        sent = data.get("direction") == "SENT"
        message_type = "OUTBOUND" if sent else "INBOUND"
        conv["messages"].append(
            {"id": data["id"], "type": message_type, "content": data["content"], "timestamp": stamp}
        )
        if not sent:
            conv["messages"].append(
                {
                    "id": f"reply-{data['id']}",
                    "type": "OUTBOUND",
                    "content": f"{replay.REPLY_PREFIX}{data['id']}\n",
                    "timestamp": stamp,
                }
            )
        return 202, {"id": data["id"]}


class FakeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ThreadingHTTPServer

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, payload: object) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802 (http.server API)
        state: FakeState = self.server.state  # type: ignore[attr-defined]
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        with state.lock:
            state.requests.append((dict(self.headers), raw))
            self._send(*state.handle_event(json.loads(raw)))

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        state: FakeState = self.server.state  # type: ignore[attr-defined]
        match = re.fullmatch(r"/conversations/([^/]+)/", self.path)
        with state.lock:
            conv = state.conversations.get(match.group(1)) if match else None
            self._send(200, conv) if conv else self._send(404, {"error": "not_found"})


@pytest.fixture()
def fake() -> Iterator[tuple[str, FakeState]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHandler)
    server.daemon_threads = True
    server.state = FakeState()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.state  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# --------------------------------------------------------------------------------------------
# Placeholders
# --------------------------------------------------------------------------------------------


def test_placeholders_are_fresh_uuids_stable_within_a_run() -> None:
    template = {"a": "{conv}", "b": ["{msg1}", {"c": "{conv}"}], "n": 3, "text": "{not a name}"}
    first = replay.Placeholders().substitute(template)
    second = replay.Placeholders().substitute(template)
    assert first["a"] == first["b"][1]["c"]
    assert UUID_RE.match(first["a"]) and UUID_RE.match(first["b"][0])
    assert first["a"] != first["b"][0]
    assert first["a"] != second["a"]
    assert first["n"] == 3 and first["text"] == "{not a name}"


def test_now_placeholder_is_utc_iso_and_parses() -> None:
    value = replay.Placeholders().substitute("{now}")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", value)
    assert abs(replay.parse_iso(value) - time.time()) < 5


def test_find_placeholders() -> None:
    assert replay.find_placeholders({"x": ["{a}-{b}", "{now}"], "y": 1}) == {"a", "b", "now"}


# --------------------------------------------------------------------------------------------
# Scenario files
# --------------------------------------------------------------------------------------------


def test_all_shipped_scenarios_load_and_are_well_formed() -> None:
    paths = replay.list_scenarios()
    assert {p.stem for p in paths} >= SHIPPED
    for path in paths:
        scenario = replay.load_scenario(path)
        assert scenario.description and scenario.steps and scenario.expectations, path
        assert all(step.expect_status for step in scenario.steps), path


def test_scenario_by_name_and_unknown_name() -> None:
    assert replay.load_scenario("burst").name == "burst"
    with pytest.raises(replay.ScenarioError, match="known: .*burst"):
        replay.load_scenario("does-not-exist")


def test_validation_reports_problems() -> None:
    doc = {
        "description": "",
        "steps": [
            {"at": 2, "event": {"type": "NEW_MESSAGE", "timestamp": "{now}", "data": {"id": "x"}}},
            {"at": 1, "event": {"type": "BOGUS", "timestamp": "{now}", "data": {"id": "{c}"}}},
        ],
        "expect": {"conversation": "{other}", "replies": "nope", "typo": 1},
    }
    errors = "\n".join(replay.validate_scenario(doc))
    for fragment in (
        "description",
        "data.content",
        "event type",
        "ordered by 'at'",
        "'replies'",
        "unknown key 'typo'",
        "['other']",
    ):
        assert fragment in errors


def test_seed_jsonl_matches_the_seed_payloads() -> None:
    steps = replay.load_jsonl(replay.SCENARIO_DIR / "seed.jsonl")
    assert [s.event for s in steps] == replay.seed_events(close=True)
    assert [s.at for s in steps] == [0, 5, 300]
    assert steps[1].event["data"]["id"] == "49108c71-4dca-4af3-9f32-61bc745926e2"


# --------------------------------------------------------------------------------------------
# Percentiles and reply parsing
# --------------------------------------------------------------------------------------------


def test_percentile_interpolates_linearly() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert replay.percentile(values, 0) == 1.0
    assert replay.percentile(values, 50) == 2.5
    assert replay.percentile(values, 100) == 4.0
    assert replay.percentile(list(range(101)), 99) == 99
    assert replay.percentile([7.0], 95) == 7.0
    assert replay.percentile([], 50) is None
    with pytest.raises(ValueError):
        replay.percentile([1.0], 101)


def test_summarize() -> None:
    assert replay.summarize([0.001, 0.002, 0.003], (50,), scale=1000) == {
        "count": 3,
        "min": 1.0,
        "p50": 2.0,
        "max": 3.0,
    }
    assert replay.summarize([])["p99"] is None


def test_parse_reply() -> None:
    assert replay.parse_reply("Mensagens recebidas:\na\nb\n") == ["a", "b"]
    assert replay.parse_reply("Olá") is None
    assert replay.parse_reply(None) is None


def test_analyze_groups_counts_answers_and_lateness() -> None:
    sent = 1_700_000_000.0
    groups = [
        replay.Group(0, "c1", ["a", "b"], [202, 202], 2, sent),
        replay.Group(1, "c1", ["c"], [202], 1, sent),
        replay.Group(2, "c2", ["d"], [202], 1, sent),
        replay.Group(3, "c2", ["e"], [503], 1, sent),  # rejected: not expected to be answered
    ]
    stamp = replay.utc_now_iso(sent + 5.5)
    reply = {"type": "OUTBOUND", "timestamp": stamp}
    conversations = {
        "c1": {
            "messages": [
                {**reply, "content": "Mensagens recebidas:\na\nb\n"},
                {**reply, "content": "Mensagens recebidas:\nc\n"},
                {**reply, "content": "Mensagens recebidas:\nc\nzz\n"},
            ]
        },
        "c2": {"messages": [{"type": "INBOUND", "content": "Mensagens recebidas:\nd\n"}]},
    }
    analysis = replay.analyze_groups(groups, conversations)
    assert analysis.answers == {0: 1, 1: 2, 2: 0}
    assert analysis.mismatched == 1 and analysis.foreign_ids == 1 and analysis.replies_seen == 3
    assert analysis.lateness == pytest.approx([0.5, 0.5], abs=0.002)


# --------------------------------------------------------------------------------------------
# Client, signature, JSON-lines timing
# --------------------------------------------------------------------------------------------


def test_signature_header(fake: tuple[str, FakeState]) -> None:
    base_url, state = fake
    client = replay.Client(base_url, secret="s3cret")
    response = client.post_event(replay.new_conversation_event("c1"))
    client.close()
    assert response.status == 201
    headers, raw = state.requests[0]
    expected = "sha256=" + hmac.new(b"s3cret", raw, hashlib.sha256).hexdigest()
    assert headers[replay.SIGNATURE_HEADER] == expected == replay.sign("s3cret", raw)


def test_no_signature_without_secret(fake: tuple[str, FakeState]) -> None:
    base_url, state = fake
    client = replay.Client(base_url)
    client.post_event(replay.new_conversation_event("c1"))
    client.close()
    assert replay.SIGNATURE_HEADER not in state.requests[0][0]


def test_transport_error_is_status_zero() -> None:
    client = replay.Client("http://127.0.0.1:9", timeout=0.5)
    assert client.post_event(replay.new_conversation_event("c1")).status == 0


def test_jsonl_offsets_and_speed_zero(fake: tuple[str, FakeState], tmp_path: Path) -> None:
    base_url, state = fake
    path = tmp_path / "events.jsonl"
    bare = replay.new_conversation_event("{conv}", "2025-06-04T14:20:00Z")
    bare_later = replay.new_message_event("{conv}", "{m}", "oi", "2025-06-04T14:20:30Z")
    path.write_text(
        "\n".join(
            [
                json.dumps(bare),
                "",
                json.dumps(bare_later),
                json.dumps({"at": 100, "event": replay.close_conversation_event("{conv}")}),
            ]
        )
    )
    steps = replay.load_jsonl(path)
    assert [s.at for s in steps] == [0, 30, 100]
    client = replay.Client(base_url)
    started = time.monotonic()
    results = replay.play_steps(client, steps, replay.Placeholders(), speed=0)
    client.close()
    assert time.monotonic() - started < 1
    assert [r.status for r in results] == [201, 202, 200]
    assert len(state.conversations) == 1 and UUID_RE.match(next(iter(state.conversations)))


def test_play_steps_waits_scaled_by_speed() -> None:
    now = [0.0]
    slept: list[float] = []

    class StubClient:
        def post_event(self, event: dict) -> replay.Response:
            return replay.Response(202, None, 0.0)

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    steps = [replay.Step(0, {}), replay.Step(4, {}), replay.Step(10, {})]
    replay.play_steps(
        StubClient(), steps, replay.Placeholders(), 2, clock=lambda: now[0], sleep=sleep
    )  # type: ignore[arg-type]
    assert slept == [2, 3]


def test_cli_file_speed_zero(fake: tuple[str, FakeState], capsys: pytest.CaptureFixture) -> None:
    base_url, state = fake
    seed = str(replay.SCENARIO_DIR / "seed.jsonl")
    assert replay.main(["file", seed, "--speed", "0", "--base-url", base_url]) == 0
    out = capsys.readouterr().out
    assert "NEW_CONVERSATION 6a41b347-8d80-4ce9-84ba-7af66f369f6a -> 201" in out
    assert state.conversations[replay.SEED_CONVERSATION_ID]["status"] == "CLOSED"


# --------------------------------------------------------------------------------------------
# Expectations against the fake server
# --------------------------------------------------------------------------------------------


def _scenario(expect: dict | list, expect_status: int = 202) -> replay.Scenario:
    doc = {
        "description": "inline",
        "steps": [
            {
                "at": 0,
                "event": replay.new_conversation_event("{conv}", "{now}"),
                "expect_status": 201,
            },
            {
                "at": 0,
                "event": replay.new_message_event("{conv}", "{msg1}", "oi", "{now}"),
                "expect_status": expect_status,
            },
        ],
        "expect": expect,
    }
    return replay.parse_scenario(doc, "inline")


def _run(base_url: str, scenario: replay.Scenario) -> replay.ScenarioReport:
    client = replay.Client(base_url)
    try:
        return replay.run_scenario(
            client, scenario, verify=True, default_deadline=0.2, poll_interval=0.05
        )
    finally:
        client.close()


def test_expectations_pass(fake: tuple[str, FakeState]) -> None:
    expect = {
        "conversation": "{conv}",
        "status": "OPEN",
        "replies": [["{msg1}"]],
        "messages": [{"id": "{msg1}", "type": "INBOUND", "content": "oi"}],
        "settle": 0,
    }
    report = _run(fake[0], _scenario(expect))
    assert report.ok, report.render()
    assert report.to_dict()["ok"] is True
    assert set(report.placeholders) == {"conv", "msg1"}
    assert "PASS" in report.render()


def test_expectations_fail_on_reply_count_status_and_http_status(
    fake: tuple[str, FakeState],
) -> None:
    expect = {
        "conversation": "{conv}",
        "status": "CLOSED",
        "replies": [["{msg1}"], ["{msg1}"]],
        "absent": ["{msg1}"],
        "settle": 0,
        "deadline": 0.1,
    }
    report = _run(fake[0], _scenario(expect, expect_status=400))
    failed = {check.name for check in report.checks if not check.ok}
    assert {"status", "reply count", "reply 2 lists"} <= failed
    assert any(name.endswith("absent") for name in failed)
    assert report.steps[1].problem == "expected HTTP 400, got 202"
    assert not report.ok and "FAIL" in report.render()


def test_check_conversation_missing() -> None:
    checks = replay.check_conversation({"conversation": "x"}, replay.Response(404, {}, 0.0))
    assert len(checks) == 1 and not checks[0].ok


def test_step_expect_error() -> None:
    result = replay.StepResult(0, 0, 0, {}, 400, {"error": "other"}, 0, (400,), "message_expired")
    assert result.problem == "expected error 'message_expired', got 'other'"


def test_cli_help_and_seed(fake: tuple[str, FakeState], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as excinfo:
        replay.main(["--help"])
    assert excinfo.value.code == 0
    assert "scenario" in capsys.readouterr().out
    assert replay.main(["seed", "--base-url", fake[0], "--json"]) == 0
    outputs = json.loads(capsys.readouterr().out)
    assert [o["status"] for o in outputs] == [201, 202]
    assert outputs[1]["event"]["data"]["content"] == replay.SEED_CONTENT


def test_load_runner_against_fake(
    fake: tuple[str, FakeState], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replay, "GROUP_QUIET_SECONDS", 0.05)  # the fake replies instantly
    config = replay.LoadConfig(
        rate=20,
        conversations=3,
        duration=0.15,
        messages_per_group=1,
        gap=0,
        concurrency=4,
        margin=0.05,
        reply_wait=0.3,
        poll_interval=0.05,
    )
    assert config.validate() == []
    pool = replay.ClientPool(lambda: replay.Client(fake[0]))
    report = replay.LoadRunner(pool, config).run()
    groups = report["groups"]
    assert report["conversations"]["created"] == 3
    assert groups["sent"] >= 2 and groups["answered_once"] == groups["sent"]
    assert groups["unanswered"] == groups["answered_more_than_once"] == 0
    assert report["replies_seen"] == groups["sent"]
    assert report["reply_lateness_s"]["count"] == groups["sent"]
    assert report["requests"]["total"] == 3 + groups["sent"]
    assert report["requests"]["by_status"] == {"201": 3, "202": groups["sent"]}
    assert replay.load_report_ok(report) and "PASS" in replay.render_load_report(report)


def test_load_config_validation() -> None:
    errors = replay.LoadConfig(rate=0, gap=5).validate()
    assert any("--rate" in e for e in errors) and any("--gap" in e for e in errors)
    assert replay.LoadConfig(conversations=16, messages_per_group=3, gap=1).sustainable_rate == 2.0
