"""Unit tests for scripts/replay/cli.py against the in-process fake service: exit codes follow
the answers each step expects, and runs use fresh ids unless told to keep them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.replay.cli import main
from scripts.replay.events import (
    SEED_CONTENT,
    SEED_CONVERSATION_ID,
    new_conversation_event,
    new_message_event,
)
from scripts.replay.scenarios import SCENARIO_DIR

from .support import UUID_RE, FakeState

SEED_FILE = str(SCENARIO_DIR / "seed.jsonl")


def test_cli_file_speed_zero(fake: tuple[str, FakeState], capsys: pytest.CaptureFixture) -> None:
    base_url, state = fake
    assert main(["file", SEED_FILE, "--speed", "0", "--base-url", base_url]) == 0
    out = capsys.readouterr().out
    (conversation_id,) = state.conversations
    assert UUID_RE.match(conversation_id) and conversation_id != SEED_CONVERSATION_ID
    assert f"NEW_CONVERSATION {conversation_id} -> 201" in out
    assert f"{SEED_CONVERSATION_ID} -> {conversation_id}" in out
    # The message went to the conversation the run created, which the close then closed.
    conversation = state.conversations[conversation_id]
    assert conversation["status"] == "CLOSED"
    assert conversation["messages"][0]["content"] == SEED_CONTENT
    assert out.rstrip().endswith("PASS")


def test_cli_help_and_seed(fake: tuple[str, FakeState], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["--help"])
    assert excinfo.value.code == 0
    assert "scenario" in capsys.readouterr().out
    assert main(["seed", "--base-url", fake[0], "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    assert [step["status"] for step in report["steps"]] == [201, 202]
    assert report["steps"][1]["event"]["data"]["content"] == SEED_CONTENT
    assert report["ids"][SEED_CONVERSATION_ID] == report["steps"][0]["id"]


@pytest.mark.parametrize("command", [["seed", "--close"], ["file", SEED_FILE, "--speed", "0"]])
def test_following_the_readme_twice_works_with_fresh_ids(
    fake: tuple[str, FakeState], command: list[str]
) -> None:
    base_url, state = fake
    assert main([*command, "--base-url", base_url]) == 0
    assert main([*command, "--base-url", base_url]) == 0
    assert len(state.conversations) == 2
    assert SEED_CONVERSATION_ID not in state.conversations


@pytest.mark.parametrize("command", [["seed"], ["file", SEED_FILE, "--speed", "0"]])
def test_a_repeated_run_with_kept_ids_exits_1(
    fake: tuple[str, FakeState], capsys: pytest.CaptureFixture, command: list[str]
) -> None:
    base_url, state = fake
    assert main([*command, "--keep-ids", "--base-url", base_url]) == 0
    assert list(state.conversations) == [SEED_CONVERSATION_ID]
    capsys.readouterr()

    assert main([*command, "--keep-ids", "--base-url", base_url]) == 1

    out = capsys.readouterr().out
    assert "!! expected HTTP 201, got 400" in out
    assert "conversation_exists" in out
    assert "FAIL (" in out


def _write_lines(path: Path, lines: list[dict]) -> str:
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return str(path)


def test_file_lines_state_their_expected_answer(
    fake: tuple[str, FakeState], tmp_path: Path
) -> None:
    conversation = "11111111-2222-4333-8444-555555555555"
    message = new_message_event(conversation, "21111111-2222-4333-8444-555555555555", "oi")
    lines = [
        new_conversation_event(conversation),
        message,
        # The same message again: the service rejects it, and this line says so.
        {"event": message, "expect_status": 400, "expect_error": "duplicate_message"},
    ]
    as_expected = _write_lines(tmp_path / "ok.jsonl", lines)
    assert main(["file", as_expected, "--speed", "0", "--base-url", fake[0]]) == 0

    lines[2] = {"event": message, "expect_status": 202}
    not_as_expected = _write_lines(tmp_path / "bad.jsonl", lines)
    assert main(["file", not_as_expected, "--speed", "0", "--base-url", fake[0]]) == 1


def test_file_bare_lines_expect_to_be_accepted(fake: tuple[str, FakeState], tmp_path: Path) -> None:
    # A message for a closed conversation is answered 400: a bare line expects 202.
    conversation = "11111111-2222-4333-8444-555555555555"
    lines = [
        new_conversation_event(conversation),
        {
            "type": "CLOSE_CONVERSATION",
            "timestamp": "2025-06-04T14:25:00Z",
            "data": {"id": conversation},
        },
        new_message_event(conversation, "21111111-2222-4333-8444-555555555555", "oi"),
    ]
    path = _write_lines(tmp_path / "events.jsonl", lines)
    assert main(["file", path, "--speed", "0", "--base-url", fake[0]]) == 1


def test_file_with_a_malformed_expectation_is_a_file_error(tmp_path: Path) -> None:
    path = _write_lines(
        tmp_path / "events.jsonl", [{"event": new_conversation_event("x"), "expect_status": "201"}]
    )
    assert main(["file", path, "--speed", "0", "--base-url", "http://127.0.0.1:9"]) == 2


def _scenario_file(tmp_path: Path, conversation: str, message_status: int) -> str:
    doc = {
        "description": "a conversation with a fixed id, then a message",
        "steps": [
            {
                "at": 0,
                "event": new_conversation_event(conversation, "{now}"),
                "expect_status": 201,
            },
            {
                "at": 0,
                "event": new_message_event(conversation, "{msg}", "oi", "{now}"),
                "expect_status": message_status,
            },
        ],
        "expect": {"conversation": conversation, "status": "OPEN", "settle": 0},
    }
    path = tmp_path / "fixed.json"
    path.write_text(json.dumps(doc))
    return str(path)


def test_scenario_without_expect_exits_1_when_a_step_answer_differs(
    fake: tuple[str, FakeState], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = _scenario_file(tmp_path, "{conv}", message_status=400)
    assert main(["scenario", path, "--speed", "0", "--base-url", fake[0]]) == 1
    assert "expected HTTP 400, got 202" in capsys.readouterr().out

    good = _scenario_file(tmp_path, "{conv}", message_status=202)
    assert main(["scenario", good, "--speed", "0", "--base-url", fake[0]]) == 0


def test_scenario_ids_written_out_are_fresh_in_steps_and_expectations(
    fake: tuple[str, FakeState], tmp_path: Path
) -> None:
    base_url, state = fake
    fixed = "31111111-2222-4333-8444-555555555555"
    path = _scenario_file(tmp_path, fixed, message_status=202)
    run = ["scenario", path, "--speed", "0", "--expect", "--deadline", "1", "--base-url", base_url]

    assert main(run) == 0
    assert main(run) == 0  # a second run creates another conversation, and checks that one
    assert len(state.conversations) == 2 and fixed not in state.conversations

    assert main([*run, "--keep-ids"]) == 0
    assert main([*run, "--keep-ids"]) == 1


def test_reads_send_the_token_of_api_token(
    fake: tuple[str, FakeState], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base_url, state = fake
    state.token = "t2"
    path = _scenario_file(tmp_path, "{conv}", message_status=202)
    run = [
        "scenario",
        path,
        "--speed",
        "0",
        "--expect",
        "--deadline",
        "0.2",
        "--base-url",
        base_url,
    ]

    assert main(run) == 1  # the check's GET answered 401
    assert main([*run, "--token", "t2"]) == 0
    monkeypatch.setenv("API_TOKEN", "t2, t1")  # rotation: the first one is used
    assert main(run) == 0
