"""Unit tests for scripts/replay/player.py: JSON-lines files and timed playback."""

from __future__ import annotations

import json
import time
from pathlib import Path

from scripts.replay.client import Client, Response
from scripts.replay.events import (
    Placeholders,
    close_conversation_event,
    new_conversation_event,
    new_message_event,
    seed_events,
)
from scripts.replay.player import Step, StepResult, load_jsonl, play_steps
from scripts.replay.scenarios import SCENARIO_DIR

from .support import UUID_RE, FakeState


def test_seed_jsonl_matches_the_seed_payloads() -> None:
    steps = load_jsonl(SCENARIO_DIR / "seed.jsonl")
    assert [s.event for s in steps] == seed_events(close=True)
    assert [s.at for s in steps] == [0, 5, 300]
    assert steps[1].event["data"]["id"] == "49108c71-4dca-4af3-9f32-61bc745926e2"


def test_jsonl_offsets_and_speed_zero(fake: tuple[str, FakeState], tmp_path: Path) -> None:
    base_url, state = fake
    path = tmp_path / "events.jsonl"
    bare = new_conversation_event("{conv}", "2025-06-04T14:20:00Z")
    bare_later = new_message_event("{conv}", "{m}", "oi", "2025-06-04T14:20:30Z")
    path.write_text(
        "\n".join(
            [
                json.dumps(bare),
                "",
                json.dumps(bare_later),
                json.dumps({"at": 100, "event": close_conversation_event("{conv}")}),
            ]
        )
    )
    steps = load_jsonl(path)
    assert [s.at for s in steps] == [0, 30, 100]
    client = Client(base_url)
    started = time.monotonic()
    results = play_steps(client, steps, Placeholders(), speed=0)
    client.close()
    assert time.monotonic() - started < 1
    assert [r.status for r in results] == [201, 202, 200]
    assert len(state.conversations) == 1 and UUID_RE.match(next(iter(state.conversations)))


def test_play_steps_waits_scaled_by_speed() -> None:
    now = [0.0]
    slept: list[float] = []

    class StubClient:
        def post_event(self, event: dict) -> Response:
            return Response(202, None, 0.0)

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    steps = [Step(0, {}), Step(4, {}), Step(10, {})]
    play_steps(StubClient(), steps, Placeholders(), 2, clock=lambda: now[0], sleep=sleep)  # type: ignore[arg-type]
    assert slept == [2, 3]


def test_step_expect_error() -> None:
    result = StepResult(0, 0, 0, {}, 400, {"error": "other"}, 0, (400,), "message_expired")
    assert result.problem == "expected error 'message_expired', got 'other'"
