"""Unit tests for scripts/replay/scenarios.py: the shipped files, validation, and
expectations verified against the in-process fake service."""

from __future__ import annotations

import pytest

from scripts.replay.client import Client, Response
from scripts.replay.events import new_conversation_event, new_message_event
from scripts.replay.scenarios import (
    Scenario,
    ScenarioError,
    ScenarioReport,
    check_conversation,
    list_scenarios,
    load_scenario,
    parse_scenario,
    run_scenario,
    validate_scenario,
)

from .support import FakeState

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


def test_all_shipped_scenarios_load_and_are_well_formed() -> None:
    paths = list_scenarios()
    assert {p.stem for p in paths} >= SHIPPED
    for path in paths:
        scenario = load_scenario(path)
        assert scenario.description and scenario.steps and scenario.expectations, path
        assert all(step.expect_status for step in scenario.steps), path


def test_scenario_by_name_and_unknown_name() -> None:
    assert load_scenario("burst").name == "burst"
    with pytest.raises(ScenarioError, match="known: .*burst"):
        load_scenario("does-not-exist")


def test_validation_reports_problems() -> None:
    doc = {
        "description": "",
        "steps": [
            {"at": 2, "event": {"type": "NEW_MESSAGE", "timestamp": "{now}", "data": {"id": "x"}}},
            {"at": 1, "event": {"type": "BOGUS", "timestamp": "{now}", "data": {"id": "{c}"}}},
        ],
        "expect": {"conversation": "{other}", "replies": "nope", "typo": 1},
    }
    errors = "\n".join(validate_scenario(doc))
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


def _scenario(expect: dict | list, expect_status: int = 202) -> Scenario:
    doc = {
        "description": "inline",
        "steps": [
            {
                "at": 0,
                "event": new_conversation_event("{conv}", "{now}"),
                "expect_status": 201,
            },
            {
                "at": 0,
                "event": new_message_event("{conv}", "{msg1}", "oi", "{now}"),
                "expect_status": expect_status,
            },
        ],
        "expect": expect,
    }
    return parse_scenario(doc, "inline")


def _run(base_url: str, scenario: Scenario) -> ScenarioReport:
    client = Client(base_url)
    try:
        return run_scenario(client, scenario, verify=True, default_deadline=0.2, poll_interval=0.05)
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
    checks = check_conversation({"conversation": "x"}, Response(404, {}, 0.0))
    assert len(checks) == 1 and not checks[0].ok
