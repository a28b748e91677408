"""Unit tests for scripts/replay/cli.py against the in-process fake service."""

from __future__ import annotations

import json

import pytest

from scripts.replay.cli import main
from scripts.replay.events import SEED_CONTENT, SEED_CONVERSATION_ID
from scripts.replay.scenarios import SCENARIO_DIR

from .support import FakeState


def test_cli_file_speed_zero(fake: tuple[str, FakeState], capsys: pytest.CaptureFixture) -> None:
    base_url, state = fake
    seed = str(SCENARIO_DIR / "seed.jsonl")
    assert main(["file", seed, "--speed", "0", "--base-url", base_url]) == 0
    out = capsys.readouterr().out
    assert "NEW_CONVERSATION 6a41b347-8d80-4ce9-84ba-7af66f369f6a -> 201" in out
    assert state.conversations[SEED_CONVERSATION_ID]["status"] == "CLOSED"


def test_cli_help_and_seed(fake: tuple[str, FakeState], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["--help"])
    assert excinfo.value.code == 0
    assert "scenario" in capsys.readouterr().out
    assert main(["seed", "--base-url", fake[0], "--json"]) == 0
    outputs = json.loads(capsys.readouterr().out)
    assert [o["status"] for o in outputs] == [201, 202]
    assert outputs[1]["event"]["data"]["content"] == SEED_CONTENT
