"""Scenario files (``scenarios/*.json``): load and validate them, play their steps, then poll
the conversations until their expectations hold or their deadline passes.

The file format is described in ``scenarios/README.md``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .client import Client, Response
from .events import (
    DIRECTIONS,
    EVENT_TYPES,
    FreshIds,
    Placeholders,
    Reply,
    find_placeholders,
    generated_groups,
    parse_reply,
    replies_of,
)
from .player import Step, StepResult, play_steps

SCENARIO_DIR = Path(__file__).resolve().parents[2] / "scenarios"
# Seconds after the last step before an expectation may pass: the service's 5 s quiet window
# plus time for its reply to be written, so "no reply" is not accepted too early.
DEFAULT_SETTLE = 6.5
DEFAULT_DEADLINE = 15.0  # seconds after the last step before an expectation fails
POLL_INTERVAL = 0.25  # seconds between two reads of a conversation

STEP_KEYS = {"at", "event", "expect_status", "expect_error", "note"}
EXPECT_KEYS = {"conversation", "status", "replies", "messages", "absent", "settle", "deadline"}
SCENARIO_KEYS = {"description", "steps", "expect"}


class ScenarioError(ValueError):
    """A scenario that cannot be found, read or parsed."""


@dataclass
class Scenario:
    """A parsed scenario; ``expectations`` are its ``expect`` objects, placeholders unfilled."""

    name: str
    description: str
    steps: list[Step]
    expectations: list[dict]
    path: Path | None = None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _validate_event(event: Any, where: str) -> list[str]:
    if not isinstance(event, dict):
        return [f"{where}: 'event' must be an object"]
    errors = []
    kind = event.get("type")
    if kind not in EVENT_TYPES:
        errors.append(f"{where}: event type must be one of {', '.join(EVENT_TYPES)}")
    if not isinstance(event.get("timestamp"), str):
        errors.append(f"{where}: event 'timestamp' must be a string (e.g. \"{{now}}\")")
    data = event.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("id"), str):
        return errors + [f"{where}: event 'data.id' must be a string"]
    if kind == "NEW_MESSAGE":
        for key in ("content", "conversation_id"):
            if not isinstance(data.get(key), str):
                errors.append(f"{where}: NEW_MESSAGE 'data.{key}' must be a string")
        if "direction" in data and data["direction"] not in DIRECTIONS:
            errors.append(f"{where}: 'data.direction' must be one of {', '.join(DIRECTIONS)}")
    return errors


def _validate_step(step: Any, where: str) -> list[str]:
    if not isinstance(step, dict):
        return [f"{where}: must be an object"]
    errors = [f"{where}: unknown key {key!r}" for key in sorted(set(step) - STEP_KEYS)]
    if not _is_number(step.get("at")) or step["at"] < 0:
        errors.append(f"{where}: 'at' must be a number >= 0")
    errors += _validate_event(step.get("event"), where)
    status = step.get("expect_status")
    statuses = status if isinstance(status, list) else [status]
    if status is not None and not all(
        isinstance(s, int) and not isinstance(s, bool) and 100 <= s <= 599 for s in statuses
    ):
        errors.append(f"{where}: 'expect_status' must be an HTTP status or a list of them")
    if "expect_error" in step and not isinstance(step["expect_error"], str):
        errors.append(f"{where}: 'expect_error' must be a string")
    return errors


def _validate_expectation(expect: Any, where: str) -> list[str]:
    if not isinstance(expect, dict):
        return [f"{where}: must be an object"]
    errors = [f"{where}: unknown key {key!r}" for key in sorted(set(expect) - EXPECT_KEYS)]
    if not isinstance(expect.get("conversation"), str):
        errors.append(f"{where}: 'conversation' must be a string")
    if "status" in expect and not isinstance(expect["status"], str):
        errors.append(f"{where}: 'status' must be a string")
    replies = expect.get("replies", [])
    if not isinstance(replies, list) or not all(
        isinstance(r, list) and all(isinstance(i, str) for i in r) for r in replies
    ):
        errors.append(f"{where}: 'replies' must be a list of lists of message ids")
    messages = expect.get("messages", [])
    if not isinstance(messages, list) or not all(
        isinstance(m, dict) and isinstance(m.get("id"), str) for m in messages
    ):
        errors.append(f"{where}: 'messages' must be a list of objects with an 'id'")
    absent = expect.get("absent", [])
    if not isinstance(absent, list) or not all(isinstance(i, str) for i in absent):
        errors.append(f"{where}: 'absent' must be a list of message ids")
    for key in ("settle", "deadline"):
        if key in expect and (not _is_number(expect[key]) or expect[key] < 0):
            errors.append(f"{where}: {key!r} must be a number >= 0")
    return errors


def validate_scenario(doc: Any) -> list[str]:
    """All problems of a scenario document (empty list: well-formed)."""
    if not isinstance(doc, dict):
        return ["scenario must be a JSON object"]
    errors = [f"unknown key {key!r}" for key in sorted(set(doc) - SCENARIO_KEYS)]
    if not isinstance(doc.get("description"), str) or not doc["description"].strip():
        errors.append("'description' must be a non-empty string")
    steps = doc.get("steps")
    if not isinstance(steps, list) or not steps:
        return errors + ["'steps' must be a non-empty list"]
    for index, step in enumerate(steps):
        errors += _validate_step(step, f"steps[{index}]")
    ats = [s.get("at") for s in steps if isinstance(s, dict) and _is_number(s.get("at"))]
    if ats != sorted(ats):
        errors.append("steps must be ordered by 'at'")
    expectations = doc.get("expect", [])
    expectations = expectations if isinstance(expectations, list) else [expectations]
    for index, expect in enumerate(expectations):
        errors += _validate_expectation(expect, f"expect[{index}]")
    unknown = find_placeholders(expectations) - find_placeholders(steps) - {"now"}
    if unknown:
        errors.append(f"expect uses placeholders not used by any step: {sorted(unknown)}")
    return errors


def parse_scenario(doc: Any, name: str = "scenario", path: Path | None = None) -> Scenario:
    """A :class:`Scenario` from a decoded scenario document.

    Raises :class:`ScenarioError` listing every problem :func:`validate_scenario` finds.
    """
    errors = validate_scenario(doc)
    if errors:
        raise ScenarioError(f"{path or name}: " + "; ".join(errors))
    steps = []
    for raw in doc["steps"]:
        status = raw.get("expect_status")
        statuses = (
            None if status is None else tuple(status if isinstance(status, list) else [status])
        )
        steps.append(
            Step(float(raw["at"]), raw["event"], statuses, raw.get("expect_error"), raw.get("note"))
        )
    expectations = doc.get("expect", [])
    if isinstance(expectations, dict):
        expectations = [expectations]
    return Scenario(name, doc["description"], steps, expectations, path)


def list_scenarios(directory: Path = SCENARIO_DIR) -> list[Path]:
    """The ``*.json`` files of ``directory``, sorted by name."""
    return sorted(directory.glob("*.json"))


def resolve_scenario(name_or_path: str, directory: Path = SCENARIO_DIR) -> Path:
    """An existing file path as is, else ``directory/NAME.json``; else :class:`ScenarioError`."""
    candidate = Path(name_or_path)
    if candidate.is_file():
        return candidate
    named = directory / f"{name_or_path}.json"
    if named.is_file():
        return named
    known = ", ".join(p.stem for p in list_scenarios(directory)) or "none"
    raise ScenarioError(f"no scenario {name_or_path!r} (known: {known})")


def load_scenario(name_or_path: str | Path, directory: Path = SCENARIO_DIR) -> Scenario:
    """Resolve, read and parse a scenario; its name is the file's stem."""
    path = resolve_scenario(str(name_or_path), directory)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ScenarioError(f"{path}: invalid JSON: {exc}") from exc
    return parse_scenario(doc, path.stem, path)


@dataclass
class Check:
    """One verified fact about a conversation; ``detail`` says what was expected and seen."""

    name: str
    ok: bool
    detail: str = ""

    def to_dict(self) -> dict:
        """``{"name", "ok", "detail"}``."""
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


def check_conversation(
    expect: dict, response: Response, generated: dict[str, list[str]] | None = None
) -> list[Check]:
    """Compare one ``GET /conversations/{id}/`` response with a substituted expectation;
    ``generated`` names the groups of replies the team's bot wrote (see replies_of)."""
    conv_id = expect["conversation"]
    if response.status != 200 or not isinstance(response.body, dict):
        return [Check(f"conversation {conv_id}", False, f"GET returned HTTP {response.status}")]
    conversation = response.body
    checks = [Check(f"conversation {conv_id}", True, "found")]
    if "status" in expect:
        actual = conversation.get("status")
        checks.append(
            Check(
                "status", actual == expect["status"], f"expected {expect['status']}, got {actual}"
            )
        )
    if "replies" in expect:
        checks += _check_replies(expect["replies"], replies_of(conversation, generated))
    messages = {m.get("id"): m for m in conversation.get("messages") or []}
    for wanted in expect.get("messages", []):
        checks.append(_check_message(wanted, messages.get(wanted["id"])))
    for message_id in expect.get("absent", []):
        present = message_id in messages
        checks.append(
            Check(f"message {message_id} absent", not present, "present" if present else "absent")
        )
    return checks


def _check_replies(expected: list[list[str]], replies: list[Reply]) -> list[Check]:
    checks = [
        Check(
            "reply count",
            len(replies) == len(expected),
            f"expected {len(expected)}, got {len(replies)}",
        )
    ]
    for index, wanted in enumerate(expected):
        got = replies[index].ids if index < len(replies) else None
        checks.append(
            Check(f"reply {index + 1} lists", got == wanted, f"expected {wanted}, got {got}")
        )
    return checks


def _check_message(wanted: dict, actual: dict | None) -> Check:
    name = f"message {wanted['id']}"
    if actual is None:
        return Check(name, False, "missing")
    mismatches = [
        f"{key}: expected {value!r}, got {actual.get(key)!r}"
        for key, value in wanted.items()
        if key != "id" and actual.get(key) != value
    ]
    return Check(name, not mismatches, "; ".join(mismatches) or "present")


def verify_expectation(
    client: Client,
    expect: dict,
    reference: float,
    *,
    default_deadline: float = DEFAULT_DEADLINE,
    poll_interval: float = POLL_INTERVAL,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Check]:
    """Poll until ``expect`` holds, at the earliest ``settle`` s after ``reference`` (clock time).

    Gives up (returning the failing checks) ``deadline`` s after ``reference``.
    """
    settle_at = reference + expect.get("settle", DEFAULT_SETTLE)
    deadline_at = max(reference + expect.get("deadline", default_deadline), settle_at)
    if (delay := settle_at - clock()) > 0:
        sleep(delay)
    while True:
        response = client.get_conversation(expect["conversation"])
        checks = check_conversation(expect, response, _generated(client, expect, response))
        if all(check.ok for check in checks) or clock() >= deadline_at:
            return checks
        sleep(min(poll_interval, max(deadline_at - clock(), 0.0)))


def _generated(client: Client, expect: dict, response: Response) -> dict[str, list[str]] | None:
    """The groups behind replies without the template's content (the team's bot wrote them,
    REPLY_GENERATOR_URL), read from ``GET /generations/``; None when every reply is the
    template's."""
    messages = response.body.get("messages") if isinstance(response.body, dict) else None
    if not any(
        m.get("type") == "OUTBOUND" and parse_reply(m.get("content")) is None
        for m in messages or []
        if isinstance(m, dict)
    ):
        return None
    found = client.get_generations(expect["conversation"])
    return generated_groups(found.body) if found.status == 200 else None


@dataclass
class ScenarioReport:
    """Outcome of one scenario run; ``placeholders`` maps each ``{name}`` to the uuid it got,
    ``ids`` each id written out in the scenario to its fresh replacement (empty if kept)."""

    name: str
    description: str
    placeholders: dict[str, str]
    steps: list[StepResult]
    checks: list[Check]
    verified: bool
    ids: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Every step got the answer it expects (``expect_status``, ``expect_error``) and, when
        verified, every check of the ``expect`` objects passed."""
        steps_ok = all(step.problem is None for step in self.steps)
        return steps_ok and (not self.verified or all(check.ok for check in self.checks))

    def to_dict(self) -> dict:
        """The report as ``--json`` prints it.

        ``{"scenario", "description", "ok", "verified", "placeholders", "ids", "steps":
        [step...], "checks": [{"name", "ok", "detail"}...]}``
        """
        return {
            "scenario": self.name,
            "description": self.description,
            "ok": self.ok,
            "verified": self.verified,
            "placeholders": self.placeholders,
            "ids": self.ids,
            "steps": [step.to_dict() for step in self.steps],
            "checks": [check.to_dict() for check in self.checks],
        }

    def render_summary(self) -> str:
        """Placeholder values and replaced ids, one line per check, then ``PASS`` or
        ``FAIL (n problem(s))`` (without ``--expect``, of the steps' answers only)."""
        lines = [f"  {name} = {value}" for name, value in sorted(self.placeholders.items())]
        lines += [f"  {old} -> {new}" for old, new in self.ids.items()]
        for check in self.checks:
            lines.append(f"  [{'ok' if check.ok else 'FAIL'}] {check.name}: {check.detail}")
        failed = sum(s.problem is not None for s in self.steps)
        failed += sum(not c.ok for c in self.checks) if self.verified else 0
        lines.append("PASS" if self.ok else f"FAIL ({failed} problem(s))")
        return "\n".join(lines)

    def render(self) -> str:
        """The whole report as text: title, one line per step, then the summary."""
        lines = [f"scenario {self.name}: {self.description}"]
        lines += [step.render() for step in self.steps]
        return "\n".join(lines + [self.render_summary()])


def run_scenario(
    client: Client,
    scenario: Scenario,
    *,
    verify: bool = False,
    speed: float = 1.0,
    default_deadline: float = DEFAULT_DEADLINE,
    poll_interval: float = POLL_INTERVAL,
    on_result: Callable[[StepResult], None] | None = None,
    ids: FreshIds | None = None,
) -> ScenarioReport:
    """Play ``scenario`` with fresh placeholders; with ``verify``, then check each expectation.

    With ``ids``, ids written out in the steps and expectations are replaced by fresh ones,
    consistently (placeholders are fresh anyway).

    Expectations are measured from the end of the last step: ``settle`` and ``deadline``
    (default ``default_deadline``) in s, polled every ``poll_interval`` s. ``on_result`` sees
    each step as soon as its response arrives.
    """
    placeholders = Placeholders()
    results = play_steps(client, scenario.steps, placeholders, speed, on_result=on_result, ids=ids)
    reference = time.monotonic()
    checks: list[Check] = []
    if verify:
        numbered = len(scenario.expectations) > 1
        for index, expect in enumerate(scenario.expectations, 1):
            expect_checks = verify_expectation(
                client,
                placeholders.substitute(ids.rewrite(expect) if ids else expect),
                reference,
                default_deadline=default_deadline,
                poll_interval=poll_interval,
            )
            for check in expect_checks:
                check.name = f"expect #{index} {check.name}" if numbered else check.name
            checks += expect_checks
    return ScenarioReport(
        scenario.name,
        scenario.description,
        dict(placeholders.values),
        results,
        checks,
        verify,
        dict(ids.values) if ids is not None else {},
    )
