"""Timed playback of webhook events, shared by scenarios and JSON-lines captures.

Offsets (``at``) are seconds from the start of the playback, before dividing by ``speed``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .client import Client
from .events import (
    ACCEPTED_STATUS,
    PLACEHOLDER_RE,
    FreshIds,
    Json,
    Placeholders,
    event_summary,
    parse_iso,
)


@dataclass
class Step:
    """One event to send ``at`` s after the start, with what its response must be (if set)."""

    at: float
    event: Json
    expect_status: tuple[int, ...] | None = None
    expect_error: str | None = None
    note: str | None = None


@dataclass
class StepResult:
    """What sending one :class:`Step` gave; ``event`` is the body as sent (substituted)."""

    index: int
    at: float  # planned offset, s
    sent_at: float  # actual offset of the send start, s
    event: Json
    status: int
    body: Json
    elapsed: float  # s
    expect_status: tuple[int, ...] | None = None
    expect_error: str | None = None

    @property
    def problem(self) -> str | None:
        """Why the step did not meet its expectations (``None`` if it did); a step with no
        HTTP answer never did."""
        if self.status == 0:
            return f"no HTTP answer ({self.body})"
        if self.expect_status is not None and self.status not in self.expect_status:
            wanted = "/".join(map(str, self.expect_status))
            return f"expected HTTP {wanted}, got {self.status}"
        if self.expect_error is not None:
            code = self.body.get("error") if isinstance(self.body, dict) else None
            if code != self.expect_error:
                return f"expected error {self.expect_error!r}, got {code!r}"
        return None

    def to_dict(self) -> dict:
        """The step as ``--json`` prints it (offsets in s, ``latency_ms`` in ms).

        ``{"index", "at", "sent_at", "type", "id", "event", "status", "body", "latency_ms",
        "expect_status", "expect_error", "ok", "problem"}``
        """
        return {
            "index": self.index,
            "at": self.at,
            "sent_at": round(self.sent_at, 3),
            "type": self.event.get("type"),
            "id": (self.event.get("data") or {}).get("id"),
            "event": self.event,
            "status": self.status,
            "body": self.body,
            "latency_ms": round(self.elapsed * 1000, 1),
            "expect_status": list(self.expect_status) if self.expect_status else None,
            "expect_error": self.expect_error,
            "ok": self.problem is None,
            "problem": self.problem,
        }

    def render(self) -> str:
        """``[  1.23s] TYPE id -> status body`` (body cut at 160 chars), then any problem."""
        body = json.dumps(self.body, ensure_ascii=False) if self.body is not None else ""
        if len(body) > 160:
            body = body[:157] + "..."
        mark = "" if self.problem is None else f"  !! {self.problem}"
        return f"[{self.sent_at:7.2f}s] {event_summary(self.event)} -> {self.status} {body}{mark}"


def play_steps(
    client: Client,
    steps: Sequence[Step],
    placeholders: Placeholders,
    speed: float = 1.0,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    on_result: Callable[[StepResult], None] | None = None,
    ids: FreshIds | None = None,
) -> list[StepResult]:
    """Send ``steps`` in order at ``start + at / speed`` (``speed == 0``: no waiting).

    Placeholders are substituted right before sending, so ``{now}`` is the send time; with
    ``ids``, every id written out in the step is replaced by its fresh one.
    """
    start = clock()
    results = []
    for index, step in enumerate(steps):
        if speed > 0:
            delay = start + step.at / speed - clock()
            if delay > 0:
                sleep(delay)
        sent_at = clock() - start
        # Ids before placeholders: only the ids written out are replaced, and a placeholder's
        # uuid is the one the report shows.
        event = placeholders.substitute(ids.rewrite(step.event) if ids else step.event)
        response = client.post_event(event)
        result = StepResult(
            index=index,
            at=step.at,
            sent_at=sent_at,
            event=event,
            status=response.status,
            body=response.body,
            elapsed=response.elapsed,
            expect_status=step.expect_status,
            expect_error=step.expect_error,
        )
        results.append(result)
        if on_result:
            on_result(result)
    return results


def accepted(event: Json) -> tuple[int, ...] | None:
    """The status an accepted event of this type gets (``None`` for an unknown type)."""
    status = ACCEPTED_STATUS.get(event.get("type")) if isinstance(event, dict) else None
    return None if status is None else (status,)


def _line_statuses(obj: dict, where: str) -> tuple[int, ...] | None:
    status = obj.get("expect_status")
    if status is None:
        return None
    statuses = status if isinstance(status, list) else [status]
    if not statuses or not all(
        isinstance(s, int) and not isinstance(s, bool) and 100 <= s <= 599 for s in statuses
    ):
        raise ValueError(f"{where}: 'expect_status' must be an HTTP status or a list of them")
    return tuple(statuses)


def load_jsonl(path: Path | str) -> list[Step]:
    """Read a JSON-lines file: each line a bare event or
    ``{"at": seconds, "event": {...}, "expect_status": 400, "expect_error": "..."}``
    (``at`` and the expectations optional).

    Bare events are spaced by their ``timestamp`` relative to the first timestamp in the file
    (an unparsable timestamp keeps the previous offset). A step with neither ``expect_status``
    nor ``expect_error`` is expected to be accepted (:data:`ACCEPTED_STATUS` of its type).
    Blank lines are ignored. Raises ``ValueError`` naming the line of a malformed one.
    """
    steps: list[Step] = []
    base: float | None = None
    previous_at = 0.0
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"{path}:{lineno}: invalid JSON: {exc}") from exc
        if not isinstance(obj, dict):
            raise ValueError(f"{path}:{lineno}: expected a JSON object")
        statuses, error = None, None
        if isinstance(obj.get("event"), dict):
            event, at = obj["event"], obj.get("at")
            if at is not None and (isinstance(at, bool) or not isinstance(at, int | float)):
                raise ValueError(f"{path}:{lineno}: 'at' must be a number")
            statuses = _line_statuses(obj, f"{path}:{lineno}")
            error = obj.get("expect_error")
            if error is not None and not isinstance(error, str):
                raise ValueError(f"{path}:{lineno}: 'expect_error' must be a string")
        else:
            event, at = obj, None
        stamp = _event_time(event)
        if base is None and stamp is not None:
            base = stamp
        if at is None:
            at = stamp - base if stamp is not None and base is not None else previous_at
        previous_at = float(at)
        if statuses is None and error is None:
            statuses = accepted(event)
        steps.append(Step(float(at), event, statuses, error))
    return steps


def _event_time(event: Json) -> float | None:
    value = event.get("timestamp") if isinstance(event, dict) else None
    if not isinstance(value, str) or PLACEHOLDER_RE.search(value):
        return None
    try:
        return parse_iso(value)
    except ValueError:
        return None
