#!/usr/bin/env python3
"""Replay tooling for the WhatsApp customer-service webhook receiver.

Standard library only. Subcommands:

* ``scenario NAME|PATH`` - play a scenario from ``scenarios/`` and optionally verify it.
* ``file PATH.jsonl``    - replay a JSON-lines capture with its original spacing.
* ``load``               - sustained load: many conversations, message groups at a fixed rate.
* ``seed``               - post the seed payloads from the brief.

Run ``python scripts/replay.py --help`` (or ``<subcommand> --help``) for the options.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import hmac
import http.client
import itertools
import json
import math
import os
import re
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO_ROOT = Path(__file__).resolve().parent.parent
SCENARIO_DIR = REPO_ROOT / "scenarios"
DEFAULT_BASE_URL = "http://localhost:8000"

EVENT_TYPES = ("NEW_CONVERSATION", "NEW_MESSAGE", "CLOSE_CONVERSATION")
DIRECTIONS = ("RECEIVED", "SENT")
SIGNATURE_HEADER = "X-Hub-Signature-256"
REPLY_PREFIX = "Mensagens recebidas:\n"
GROUP_QUIET_SECONDS = 5.0  # the service replies this long after the last message of a group
DEFAULT_SETTLE = 6.5  # seconds after the last step before an expectation may pass
DEFAULT_DEADLINE = 15.0  # seconds after the last step before an expectation fails
POLL_INTERVAL = 0.25
MAX_RETRY_AFTER = 10.0

Json = Any

# --------------------------------------------------------------------------------------------
# Time helpers
# --------------------------------------------------------------------------------------------


def utc_now_iso(timestamp: float | None = None) -> str:
    """RFC 3339 UTC time with millisecond precision, e.g. ``2025-06-04T14:20:05.123Z``."""
    moment = datetime.fromtimestamp(time.time() if timestamp is None else timestamp, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_iso(value: str) -> float:
    """Parse an ISO 8601 timestamp (``Z`` or offset; naive means UTC) to epoch seconds."""
    moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


# --------------------------------------------------------------------------------------------
# Statistics: the one place for percentile math
# --------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Percentile with linear interpolation between closest ranks (numpy's default).

    Returns ``None`` for an empty sequence.
    """
    if not values:
        return None
    if not 0 <= pct <= 100:
        raise ValueError(f"percentile must be within [0, 100], got {pct}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(
    values: Sequence[float], pcts: Iterable[float] = (50, 95, 99), scale: float = 1.0
) -> dict[str, float | int | None]:
    """``{"count", "min", "p50", ..., "max"}`` of ``values`` multiplied by ``scale``, rounded."""
    summary: dict[str, float | int | None] = {"count": len(values)}
    summary["min"] = round(min(values) * scale, 3) + 0.0 if values else None
    for pct in pcts:
        value = percentile(values, pct)
        summary[f"p{pct:g}"] = None if value is None else round(value * scale, 3) + 0.0
    summary["max"] = round(max(values) * scale, 3) + 0.0 if values else None
    return summary


# --------------------------------------------------------------------------------------------
# Placeholders
# --------------------------------------------------------------------------------------------

PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def find_placeholders(obj: Json) -> set[str]:
    """All placeholder names (``{name}``) used in string values of a JSON structure."""
    if isinstance(obj, str):
        return set(PLACEHOLDER_RE.findall(obj))
    if isinstance(obj, dict):
        return set().union(*(find_placeholders(value) for value in obj.values()))
    if isinstance(obj, list):
        return set().union(*(find_placeholders(value) for value in obj))
    return set()


class Placeholders:
    """Replace ``{name}`` by a fresh uuid4 (stable per instance) and ``{now}`` by UTC now."""

    def __init__(
        self,
        factory: Callable[[], str] = lambda: str(uuid.uuid4()),
        clock: Callable[[], str] = utc_now_iso,
    ) -> None:
        self._factory = factory
        self._clock = clock
        self.values: dict[str, str] = {}

    def value(self, name: str) -> str:
        if name == "now":
            return self._clock()
        if name not in self.values:
            self.values[name] = self._factory()
        return self.values[name]

    def substitute(self, obj: Json) -> Json:
        if isinstance(obj, str):
            return PLACEHOLDER_RE.sub(lambda match: self.value(match.group(1)), obj)
        if isinstance(obj, dict):
            return {key: self.substitute(value) for key, value in obj.items()}
        if isinstance(obj, list):
            return [self.substitute(value) for value in obj]
        return obj


# --------------------------------------------------------------------------------------------
# HTTP client
# --------------------------------------------------------------------------------------------


def encode_event(event: Json) -> bytes:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def sign(secret: str, body: bytes) -> str:
    """Value of the ``X-Hub-Signature-256`` header for ``body``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


@dataclass
class Response:
    status: int  # 0 means the request failed at the transport level
    body: Json
    elapsed: float  # seconds, including retries
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def error_code(self) -> str | None:
        return self.body.get("error") if isinstance(self.body, dict) else None


def _decode_body(raw: bytes) -> Json:
    text = raw.decode("utf-8", errors="replace")
    try:
        return json.loads(text) if text else None
    except ValueError:
        return text


_STALE_CONNECTION_ERRORS = (
    http.client.RemoteDisconnected,
    http.client.BadStatusLine,
    ConnectionResetError,
    BrokenPipeError,
)


class Client:
    """One persistent (keep-alive) HTTP connection to the service; not thread-safe.

    Signs webhook bodies when a secret is given. Transport failures become ``Response(0, ...)``.
    """

    def __init__(
        self,
        base_url: str,
        secret: str | None = None,
        timeout: float = 10.0,
        retries_503: int = 0,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"unsupported base URL: {base_url!r}")
        self.base_url = base_url
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self.secret = secret or None
        self.timeout = timeout
        self.retries_503 = retries_503
        self._conn: http.client.HTTPConnection | None = None

    # -- public API -------------------------------------------------------------------------

    def post_event(self, event: Json) -> Response:
        body = encode_event(event)
        headers = {"Content-Type": "application/json"}
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(self.secret, body)
        return self.request("POST", "/webhook/", body, headers)

    def get_conversation(self, conversation_id: str) -> Response:
        return self.request("GET", f"/conversations/{conversation_id}/")

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None
    ) -> Response:
        started = time.monotonic()
        attempt = 0
        while True:
            response = self._request_once(method, self._prefix + path, body, headers or {})
            if response.status != 503 or attempt >= self.retries_503:
                response.elapsed = time.monotonic() - started
                return response
            attempt += 1
            time.sleep(_retry_after(response.headers))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- internals ----------------------------------------------------------------------------

    def _connect(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = (
                http.client.HTTPSConnection
                if self._scheme == "https"
                else http.client.HTTPConnection
            )
            self._conn = cls(self._host, self._port, timeout=self.timeout)
        return self._conn

    def _request_once(self, method: str, url: str, body: bytes | None, headers: dict) -> Response:
        for attempt in range(2):
            reused = self._conn is not None
            conn = self._connect()
            try:
                conn.request(method, url, body=body, headers=headers)
                raw = conn.getresponse()
                payload = raw.read()
            except _STALE_CONNECTION_ERRORS as exc:
                self.close()
                if reused and attempt == 0:  # the server closed an idle keep-alive connection
                    continue
                return _transport_error(exc)
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                return _transport_error(exc)
            if raw.will_close:
                self.close()
            return Response(raw.status, _decode_body(payload), 0.0, dict(raw.getheaders()))
        raise AssertionError("unreachable")


def _transport_error(exc: Exception) -> Response:
    return Response(0, {"error": "transport_error", "message": f"{type(exc).__name__}: {exc}"}, 0.0)


def _retry_after(headers: dict[str, str]) -> float:
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), "1")
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER)
    except ValueError:
        return 1.0


class ClientPool:
    """One :class:`Client` per thread, so each worker keeps its own persistent connection."""

    def __init__(self, factory: Callable[[], Client]) -> None:
        self._factory = factory
        self._local = threading.local()
        self._lock = threading.Lock()
        self._clients: list[Client] = []

    def get(self) -> Client:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._factory()
            with self._lock:
                self._clients.append(client)
        return client

    def close(self) -> None:
        with self._lock:
            for client in self._clients:
                client.close()
            self._clients.clear()


# --------------------------------------------------------------------------------------------
# Events and replies
# --------------------------------------------------------------------------------------------

SEED_CONVERSATION_ID = "6a41b347-8d80-4ce9-84ba-7af66f369f6a"
SEED_MESSAGE_ID = "49108c71-4dca-4af3-9f32-61bc745926e2"
SEED_CONTENT = "Olá, quero informações sobre alugar um apartamento."


def new_conversation_event(conversation_id: str, timestamp: str | None = None) -> dict:
    return {
        "type": "NEW_CONVERSATION",
        "timestamp": timestamp or utc_now_iso(),
        "data": {"id": conversation_id},
    }


def new_message_event(
    conversation_id: str,
    message_id: str,
    content: str,
    timestamp: str | None = None,
    direction: str | None = None,
) -> dict:
    data = {"id": message_id, "content": content, "conversation_id": conversation_id}
    if direction:
        data["direction"] = direction
    return {"type": "NEW_MESSAGE", "timestamp": timestamp or utc_now_iso(), "data": data}


def close_conversation_event(conversation_id: str, timestamp: str | None = None) -> dict:
    return {
        "type": "CLOSE_CONVERSATION",
        "timestamp": timestamp or utc_now_iso(),
        "data": {"id": conversation_id},
    }


def seed_events(close: bool = False) -> list[dict]:
    """The exact seed payloads of the brief."""
    events = [
        new_conversation_event(SEED_CONVERSATION_ID, "2025-06-04T14:20:00Z"),
        new_message_event(
            SEED_CONVERSATION_ID, SEED_MESSAGE_ID, SEED_CONTENT, "2025-06-04T14:20:05Z"
        ),
    ]
    if close:
        events.append(close_conversation_event(SEED_CONVERSATION_ID, "2025-06-04T14:25:00Z"))
    return events


def event_summary(event: Json) -> str:
    data = event.get("data") if isinstance(event, dict) else None
    ident = data.get("id") if isinstance(data, dict) else None
    kind = event.get("type") if isinstance(event, dict) else None
    return f"{kind or '?'} {ident or '?'}"


@dataclass
class Reply:
    message_id: str | None
    ids: list[str]
    timestamp: str | None


def parse_reply(content: Any) -> list[str] | None:
    """Message ids listed by an automatic reply, or ``None`` if ``content`` is not a reply."""
    if not isinstance(content, str) or not content.startswith(REPLY_PREFIX):
        return None
    return [line for line in content[len(REPLY_PREFIX) :].split("\n") if line]


def replies_of(conversation: Json) -> list[Reply]:
    """The automatic replies (OUTBOUND messages with the reply prefix) of a conversation."""
    replies = []
    for message in conversation.get("messages") or []:
        if message.get("type") != "OUTBOUND":
            continue
        ids = parse_reply(message.get("content"))
        if ids is not None:
            replies.append(Reply(message.get("id"), ids, message.get("timestamp")))
    return replies


# --------------------------------------------------------------------------------------------
# Steps: scenarios and JSON-lines files share the player
# --------------------------------------------------------------------------------------------


@dataclass
class Step:
    at: float
    event: Json
    expect_status: tuple[int, ...] | None = None
    expect_error: str | None = None
    note: str | None = None


@dataclass
class StepResult:
    index: int
    at: float  # planned offset
    sent_at: float  # actual offset of the send start
    event: Json
    status: int
    body: Json
    elapsed: float
    expect_status: tuple[int, ...] | None = None
    expect_error: str | None = None

    @property
    def problem(self) -> str | None:
        """Why the step did not meet its expectations (``None`` if it did)."""
        if self.expect_status is not None and self.status not in self.expect_status:
            wanted = "/".join(map(str, self.expect_status))
            return f"expected HTTP {wanted}, got {self.status}"
        if self.expect_error is not None:
            code = self.body.get("error") if isinstance(self.body, dict) else None
            if code != self.expect_error:
                return f"expected error {self.expect_error!r}, got {code!r}"
        return None

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "at": self.at,
            "sent_at": round(self.sent_at, 3),
            "type": self.event.get("type"),
            "id": (self.event.get("data") or {}).get("id"),
            "status": self.status,
            "body": self.body,
            "latency_ms": round(self.elapsed * 1000, 1),
            "expect_status": list(self.expect_status) if self.expect_status else None,
            "expect_error": self.expect_error,
            "ok": self.problem is None,
            "problem": self.problem,
        }

    def render(self) -> str:
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
) -> list[StepResult]:
    """Send ``steps`` in order at ``start + at / speed`` (``speed == 0``: no waiting).

    Placeholders are substituted right before sending, so ``{now}`` is the send time.
    """
    start = clock()
    results = []
    for index, step in enumerate(steps):
        if speed > 0:
            delay = start + step.at / speed - clock()
            if delay > 0:
                sleep(delay)
        sent_at = clock() - start
        event = placeholders.substitute(step.event)
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


def load_jsonl(path: Path | str) -> list[Step]:
    """Read a JSON-lines file: each line a bare event or ``{"at": seconds, "event": {...}}``.

    Bare events are spaced by their ``timestamp`` relative to the first timestamp in the file
    (an unparsable timestamp keeps the previous offset). Blank lines are ignored.
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
        if isinstance(obj.get("event"), dict):
            event, at = obj["event"], obj.get("at")
            if at is not None and (isinstance(at, bool) or not isinstance(at, int | float)):
                raise ValueError(f"{path}:{lineno}: 'at' must be a number")
        else:
            event, at = obj, None
        stamp = _event_time(event)
        if base is None and stamp is not None:
            base = stamp
        if at is None:
            at = stamp - base if stamp is not None and base is not None else previous_at
        previous_at = float(at)
        steps.append(Step(at=float(at), event=event))
    return steps


def _event_time(event: Json) -> float | None:
    value = event.get("timestamp") if isinstance(event, dict) else None
    if not isinstance(value, str) or PLACEHOLDER_RE.search(value):
        return None
    try:
        return parse_iso(value)
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------------------------

STEP_KEYS = {"at", "event", "expect_status", "expect_error", "note"}
EXPECT_KEYS = {"conversation", "status", "replies", "messages", "absent", "settle", "deadline"}
SCENARIO_KEYS = {"description", "steps", "expect"}


class ScenarioError(ValueError):
    pass


@dataclass
class Scenario:
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
    return sorted(directory.glob("*.json"))


def resolve_scenario(name_or_path: str, directory: Path = SCENARIO_DIR) -> Path:
    candidate = Path(name_or_path)
    if candidate.is_file():
        return candidate
    named = directory / f"{name_or_path}.json"
    if named.is_file():
        return named
    known = ", ".join(p.stem for p in list_scenarios(directory)) or "none"
    raise ScenarioError(f"no scenario {name_or_path!r} (known: {known})")


def load_scenario(name_or_path: str | Path, directory: Path = SCENARIO_DIR) -> Scenario:
    path = resolve_scenario(str(name_or_path), directory)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ScenarioError(f"{path}: invalid JSON: {exc}") from exc
    return parse_scenario(doc, path.stem, path)


# --------------------------------------------------------------------------------------------
# Expectations
# --------------------------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


def check_conversation(expect: dict, response: Response) -> list[Check]:
    """Compare one ``GET /conversations/{id}/`` response with a substituted expectation."""
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
        checks += _check_replies(expect["replies"], replies_of(conversation))
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
        checks = check_conversation(expect, client.get_conversation(expect["conversation"]))
        if all(check.ok for check in checks) or clock() >= deadline_at:
            return checks
        sleep(min(poll_interval, max(deadline_at - clock(), 0.0)))


@dataclass
class ScenarioReport:
    name: str
    description: str
    placeholders: dict[str, str]
    steps: list[StepResult]
    checks: list[Check]
    verified: bool

    @property
    def ok(self) -> bool:
        if not self.verified:
            return all(step.status != 0 for step in self.steps)
        return all(s.problem is None for s in self.steps) and all(c.ok for c in self.checks)

    def to_dict(self) -> dict:
        return {
            "scenario": self.name,
            "description": self.description,
            "ok": self.ok,
            "verified": self.verified,
            "placeholders": self.placeholders,
            "steps": [step.to_dict() for step in self.steps],
            "checks": [check.to_dict() for check in self.checks],
        }

    def render_summary(self) -> str:
        lines = [f"  {name} = {value}" for name, value in sorted(self.placeholders.items())]
        for check in self.checks:
            lines.append(f"  [{'ok' if check.ok else 'FAIL'}] {check.name}: {check.detail}")
        if self.verified:
            failed = sum(s.problem is not None for s in self.steps)
            failed += sum(not c.ok for c in self.checks)
            lines.append("PASS" if self.ok else f"FAIL ({failed} problem(s))")
        return "\n".join(lines)

    def render(self) -> str:
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
) -> ScenarioReport:
    placeholders = Placeholders()
    results = play_steps(client, scenario.steps, placeholders, speed, on_result=on_result)
    reference = time.monotonic()
    checks: list[Check] = []
    if verify:
        numbered = len(scenario.expectations) > 1
        for index, expect in enumerate(scenario.expectations, 1):
            expect_checks = verify_expectation(
                client,
                placeholders.substitute(expect),
                reference,
                default_deadline=default_deadline,
                poll_interval=poll_interval,
            )
            for check in expect_checks:
                check.name = f"expect #{index} {check.name}" if numbered else check.name
            checks += expect_checks
    return ScenarioReport(
        scenario.name, scenario.description, dict(placeholders.values), results, checks, verify
    )


# --------------------------------------------------------------------------------------------
# Load mode
# --------------------------------------------------------------------------------------------


@dataclass
class LoadConfig:
    rate: float = 1.0
    conversations: int = 10
    duration: float = 30.0
    messages_per_group: int = 3
    gap: float = 1.0
    concurrency: int = 16
    margin: float = 1.0
    reply_wait: float = 15.0
    poll_interval: float = 1.0

    def validate(self) -> list[str]:
        errors = []
        if self.rate <= 0:
            errors.append("--rate must be > 0")
        if self.conversations < 1:
            errors.append("--conversations must be >= 1")
        if self.duration <= 0:
            errors.append("--duration must be > 0")
        if self.messages_per_group < 1:
            errors.append("--messages-per-group must be >= 1")
        if not 0 <= self.gap < GROUP_QUIET_SECONDS:
            errors.append(f"--gap must be within [0, {GROUP_QUIET_SECONDS:g}) s")
        if self.concurrency < 1:
            errors.append("--concurrency must be >= 1")
        if self.margin <= 0:
            errors.append("--margin must be > 0")
        return errors

    @property
    def sustainable_rate(self) -> float:
        """Highest group rate the conversations can carry without overlapping groups."""
        cycle = (self.messages_per_group - 1) * self.gap + GROUP_QUIET_SECONDS + self.margin
        return self.conversations / cycle


@dataclass
class Group:
    index: int
    conversation_id: str
    message_ids: list[str]
    statuses: list[int | None] = field(default_factory=list)
    completed: int = 0
    last_sent: float | None = None  # wall-clock epoch when the last message's send completed
    # The service's own end of the quiet window (the latest `reply_due_at` it answered), so
    # lateness is measured on the server's clock alone.
    reply_due: float | None = None

    @property
    def accepted_ids(self) -> list[str]:
        return [
            mid
            for mid, status in zip(self.message_ids, self.statuses, strict=True)
            if status is not None and 200 <= status < 300
        ]


@dataclass
class LoadAnalysis:
    answers: dict[int, int]  # group index -> number of replies listing any of its messages
    mismatched: int  # groups whose reply lists a different id set
    lateness: list[float]  # seconds, one per answered group
    replies_seen: int
    foreign_ids: int  # ids in replies not sent by this run

    def count(self, predicate: Callable[[int], bool]) -> int:
        return sum(1 for n in self.answers.values() if predicate(n))


def analyze_groups(groups: Sequence[Group], conversations: dict[str, Json]) -> LoadAnalysis:
    """Match the service's replies to the groups that were sent (only groups with accepted ids)."""
    expected = [g for g in groups if g.accepted_ids]
    owner = {mid: g for g in expected for mid in g.accepted_ids}
    answers = {g.index: 0 for g in expected}
    reply_for_last: dict[int, Reply] = {}
    mismatched: set[int] = set()
    replies_seen = foreign = 0
    for conv_id in {g.conversation_id for g in expected}:
        for reply in replies_of(conversations.get(conv_id) or {}):
            replies_seen += 1
            hit = {owner[mid].index: owner[mid] for mid in reply.ids if mid in owner}
            foreign += sum(1 for mid in reply.ids if mid not in owner)
            for group in hit.values():
                answers[group.index] += 1
                if set(reply.ids) != set(group.accepted_ids):
                    mismatched.add(group.index)
                if group.accepted_ids[-1] in reply.ids or group.index not in reply_for_last:
                    reply_for_last[group.index] = reply
    lateness = []
    by_index = {g.index: g for g in expected}
    for index, reply in reply_for_last.items():
        group = by_index[index]
        if reply.timestamp and group.reply_due is not None:
            lateness.append(parse_iso(reply.timestamp) - group.reply_due)
        elif reply.timestamp and group.last_sent is not None:
            lateness.append(parse_iso(reply.timestamp) - group.last_sent - GROUP_QUIET_SECONDS)
    return LoadAnalysis(answers, len(mismatched), lateness, replies_seen, foreign)


class RequestStats:
    """Thread-safe ingest request bookkeeping."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.latencies: list[float] = []
        self.statuses: Counter[int] = Counter()
        self.first_start: float | None = None
        self.last_end: float | None = None

    def record(self, response: Response, started: float, ended: float) -> None:
        with self._lock:
            self.latencies.append(response.elapsed)
            self.statuses[response.status] += 1
            self.first_start = (
                started if self.first_start is None else min(self.first_start, started)
            )
            self.last_end = ended if self.last_end is None else max(self.last_end, ended)

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    @property
    def per_second(self) -> float | None:
        if self.first_start is None or self.last_end is None or self.last_end <= self.first_start:
            return None
        return self.total / (self.last_end - self.first_start)


class LoadRunner:
    """Create conversations, start message groups at a fixed rate, then collect the replies."""

    def __init__(
        self,
        pool: ClientPool,
        config: LoadConfig,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.pool = pool
        self.config = config
        self.log = log or (lambda _msg: None)
        self.stats = RequestStats()
        self.groups: list[Group] = []
        self.created: list[str] = []
        self.skipped = 0
        self._lock = threading.Lock()
        self._idle: list[tuple[float, str]] = []  # (ready at, conversation id), a heap
        self._pending: list[tuple[float, int, Callable[[], None]]] = []  # main thread only
        self._seq = itertools.count()
        self._futures: list[Future] = []

    def run(self) -> dict:
        with ThreadPoolExecutor(self.config.concurrency, thread_name_prefix="load") as executor:
            self._executor = executor
            self._create_conversations()
            if self.created:
                self._send_groups()
            conversations = self._await_replies()
        self.pool.close()
        return self._report(analyze_groups(self.groups, conversations))

    # -- phases ---------------------------------------------------------------------------------

    def _create_conversations(self) -> None:
        ids = [str(uuid.uuid4()) for _ in range(self.config.conversations)]
        responses = list(
            self._executor.map(lambda cid: self._post(new_conversation_event(cid)), ids)
        )
        self.created = [cid for cid, resp in zip(ids, responses, strict=True) if resp.ok]
        now = time.monotonic()
        self._idle = [(now, cid) for cid in self.created]
        heapq.heapify(self._idle)
        self.log(f"created {len(self.created)}/{len(ids)} conversations")

    def _send_groups(self) -> None:
        start = time.monotonic()
        end = start + self.config.duration
        interval = 1.0 / self.config.rate
        next_start = start
        while True:
            now = time.monotonic()
            while now < end and next_start <= now:
                self._start_group(now)
                next_start += interval
            self._dispatch_due(now)
            if now >= end and not self._pending:
                break
            wake = [self._pending[0][0]] if self._pending else []
            if now < end:
                wake += [min(next_start, end)]
            time.sleep(min(max(min(wake) - now, 0.001), 0.05))
        wait(self._futures)
        self.log(f"sent {len(self.groups)} groups ({self.skipped} skipped: no idle conversation)")

    def _await_replies(self) -> dict[str, Json]:
        expected = [g for g in self.groups if g.accepted_ids and g.last_sent is not None]
        if not expected:
            return {}
        last = max(g.last_sent for g in expected if g.last_sent is not None)
        settle_at = last + GROUP_QUIET_SECONDS + self.config.margin
        deadline_at = last + GROUP_QUIET_SECONDS + self.config.reply_wait
        conv_ids = sorted({g.conversation_id for g in expected})
        while True:
            conversations = self._fetch_conversations(conv_ids)
            analysis = analyze_groups(self.groups, conversations)
            now = time.time()
            if now >= deadline_at or (analysis.count(lambda n: n == 0) == 0 and now >= settle_at):
                return conversations
            time.sleep(min(self.config.poll_interval, max(deadline_at - now, 0.01)))

    # -- helpers --------------------------------------------------------------------------------

    def _post(self, event: Json) -> Response:
        started = time.monotonic()
        response = self.pool.get().post_event(event)
        self.stats.record(response, started, time.monotonic())
        return response

    def _start_group(self, now: float) -> None:
        with self._lock:
            if not self._idle or self._idle[0][0] > now:
                self.skipped += 1
                return
            _, conv_id = heapq.heappop(self._idle)
        size = self.config.messages_per_group
        group = Group(
            len(self.groups), conv_id, [str(uuid.uuid4()) for _ in range(size)], [None] * size
        )
        self.groups.append(group)
        for k in range(size):
            due = now + k * self.config.gap
            heapq.heappush(self._pending, (due, next(self._seq), partial(self._send, group, k)))

    def _dispatch_due(self, now: float) -> None:
        while self._pending and self._pending[0][0] <= now:
            _, _, task = heapq.heappop(self._pending)
            self._futures.append(self._executor.submit(task))

    def _send(self, group: Group, k: int) -> None:
        content = f"Mensagem de carga {group.index}.{k + 1}"
        response = self._post(
            new_message_event(group.conversation_id, group.message_ids[k], content)
        )
        done = time.time()
        with self._lock:
            group.statuses[k] = response.status
            group.completed += 1
            group.last_sent = done if group.last_sent is None else max(group.last_sent, done)
            due_at = response.body.get("reply_due_at") if isinstance(response.body, dict) else None
            if due_at:
                due = parse_iso(due_at)
                group.reply_due = due if group.reply_due is None else max(group.reply_due, due)
            if group.completed == len(group.message_ids):
                ready_at = time.monotonic() + GROUP_QUIET_SECONDS + self.config.margin
                heapq.heappush(self._idle, (ready_at, group.conversation_id))

    def _fetch_conversations(self, conv_ids: list[str]) -> dict[str, Json]:
        responses = self._executor.map(lambda cid: self.pool.get().get_conversation(cid), conv_ids)
        return {
            cid: resp.body
            for cid, resp in zip(conv_ids, responses, strict=True)
            if resp.status == 200 and isinstance(resp.body, dict)
        }

    def _report(self, analysis: LoadAnalysis) -> dict:
        failed = sum(1 for g in self.groups if not g.accepted_ids)
        return {
            "config": vars(self.config),
            "sustainable_rate": round(self.config.sustainable_rate, 3),
            "conversations": {"requested": self.config.conversations, "created": len(self.created)},
            "groups": {
                "sent": len(self.groups),
                "skipped": self.skipped,
                "all_messages_rejected": failed,
                "answered_once": analysis.count(lambda n: n == 1),
                "unanswered": analysis.count(lambda n: n == 0),
                "answered_more_than_once": analysis.count(lambda n: n > 1),
                "mismatched_ids": analysis.mismatched,
            },
            "replies_seen": analysis.replies_seen,
            "foreign_reply_ids": analysis.foreign_ids,
            "reply_lateness_s": summarize(analysis.lateness),
            "ingest_latency_ms": summarize(self.stats.latencies, (50, 99), scale=1000),
            "requests": {
                "total": self.stats.total,
                "per_second": _round(self.stats.per_second),
                "by_status": {str(k): v for k, v in sorted(self.stats.statuses.items())},
            },
        }


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def load_report_ok(report: dict) -> bool:
    groups = report["groups"]
    return groups["unanswered"] == 0 and groups["answered_more_than_once"] == 0


def render_load_report(report: dict) -> str:
    groups, lat, ingest, req = (
        report["groups"],
        report["reply_lateness_s"],
        report["ingest_latency_ms"],
        report["requests"],
    )
    conv = report["conversations"]
    lines = [
        f"conversations: {conv['created']}/{conv['requested']} created",
        f"groups sent: {groups['sent']} (skipped, no idle conversation: {groups['skipped']}; "
        f"all messages rejected: {groups['all_messages_rejected']})",
        f"replies seen: {report['replies_seen']} (foreign ids: {report['foreign_reply_ids']})",
        f"groups answered once: {groups['answered_once']}, 0 times: {groups['unanswered']}, "
        f"more than once: {groups['answered_more_than_once']}, "
        f"with mismatched ids: {groups['mismatched_ids']}",
        f"reply lateness (s): p50={lat['p50']} p95={lat['p95']} p99={lat['p99']} "
        f"max={lat['max']} (n={lat['count']})",
        f"ingest latency (ms): p50={ingest['p50']} p99={ingest['p99']} max={ingest['max']}",
        f"requests: {req['total']} at {req['per_second']}/s, by status {req['by_status']}",
        "PASS" if load_report_ok(report) else "FAIL",
    ]
    if groups["skipped"]:
        lines.insert(
            2,
            f"warning: rate above what {conv['created']} conversations sustain "
            f"(~{report['sustainable_rate']}/s); raise --conversations",
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _print_json(obj: Json) -> None:
    print(json.dumps(obj, ensure_ascii=False, indent=2))


def _make_client(args: argparse.Namespace) -> Client:
    return Client(args.base_url, args.secret, args.http_timeout, args.retries_503)


def cmd_scenario(args: argparse.Namespace) -> int:
    if args.list or not args.name:
        for path in list_scenarios():
            scenario = load_scenario(path)
            print(f"{path.stem:22} {scenario.description}")
        return 0
    scenario = load_scenario(args.name)
    client = _make_client(args)
    on_result = None if args.json else (lambda r: print(r.render(), flush=True))
    if not args.json:
        print(f"scenario {scenario.name}: {scenario.description}", flush=True)
    try:
        report = run_scenario(
            client,
            scenario,
            verify=args.expect,
            speed=args.speed,
            default_deadline=args.deadline,
            on_result=on_result,
        )
    finally:
        client.close()
    if args.json:
        _print_json(report.to_dict())
    else:
        print(report.render_summary())
    return 0 if report.ok else 1


def cmd_file(args: argparse.Namespace) -> int:
    steps = load_jsonl(args.path)
    client = _make_client(args)
    on_result = None if args.json else (lambda r: print(r.render(), flush=True))
    try:
        results = play_steps(client, steps, Placeholders(), args.speed, on_result=on_result)
    finally:
        client.close()
    if args.json:
        _print_json([result.to_dict() for result in results])
    return 0 if all(result.status != 0 for result in results) else 1


def cmd_seed(args: argparse.Namespace) -> int:
    client = _make_client(args)
    outputs = []
    try:
        for event in seed_events(args.close):
            response = client.post_event(event)
            outputs.append({"event": event, "status": response.status, "body": response.body})
            if not args.json:
                body = json.dumps(response.body, ensure_ascii=False)
                print(f"{event_summary(event)} -> {response.status} {body}", flush=True)
    finally:
        client.close()
    if args.json:
        _print_json(outputs)
    return 0 if all(o["status"] != 0 for o in outputs) else 1


def cmd_load(args: argparse.Namespace) -> int:
    config = LoadConfig(
        rate=args.rate,
        conversations=args.conversations,
        duration=args.duration,
        messages_per_group=args.messages_per_group,
        gap=args.gap,
        concurrency=args.concurrency,
        margin=args.margin,
        reply_wait=args.reply_wait,
    )
    errors = config.validate()
    if errors:
        print("\n".join(errors), file=sys.stderr)
        return 2
    if config.rate > config.sustainable_rate:
        print(
            f"warning: --rate {config.rate} exceeds ~{config.sustainable_rate:.2f} groups/s that "
            f"{config.conversations} conversations can sustain; some starts will be skipped",
            file=sys.stderr,
        )
    pool = ClientPool(lambda: _make_client(args))
    log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if not args.json else None
    report = LoadRunner(pool, config, log).run()
    if args.json:
        _print_json(report)
    else:
        print(render_load_report(report))
    return 0 if load_report_ok(report) else 1


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--base-url",
        default=os.environ.get("BASE_URL") or DEFAULT_BASE_URL,
        help="service base URL (default: $BASE_URL or %(default)s)",
    )
    common.add_argument(
        "--secret",
        default=os.environ.get("WEBHOOK_SECRET") or None,
        help="sign bodies with X-Hub-Signature-256 (default: $WEBHOOK_SECRET)",
    )
    common.add_argument("--json", action="store_true", help="machine-readable JSON output")
    common.add_argument(
        "--http-timeout", type=float, default=10.0, help="per-request timeout in s (%(default)s)"
    )
    common.add_argument(
        "--retries-503",
        type=int,
        default=0,
        help="retry a 503 up to N times, honouring Retry-After (default: %(default)s)",
    )

    parser = argparse.ArgumentParser(
        prog="replay.py",
        description="Replay webhook events against the WhatsApp webhook receiver.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    scenario = sub.add_parser(
        "scenario", parents=[common], help="play a scenario from scenarios/ (or a path)"
    )
    scenario.add_argument("name", nargs="?", help="scenario name (scenarios/NAME.json) or path")
    scenario.add_argument("--list", action="store_true", help="list the shipped scenarios")
    scenario.add_argument("--expect", action="store_true", help="verify the expectations")
    scenario.add_argument("--speed", type=float, default=1.0, help="time factor (%(default)s)")
    scenario.add_argument(
        "--deadline",
        type=float,
        default=DEFAULT_DEADLINE,
        help="default s after the last step to wait for expectations (%(default)s)",
    )
    scenario.set_defaults(func=cmd_scenario)

    replay_file = sub.add_parser("file", parents=[common], help="replay a JSON-lines file")
    replay_file.add_argument("path", help="events, one per line (bare or {at, event})")
    replay_file.add_argument(
        "--speed", type=float, default=1.0, help="2 = twice as fast, 0 = no waiting (%(default)s)"
    )
    replay_file.set_defaults(func=cmd_file)

    load = sub.add_parser("load", parents=[common], help="sustained load with reply accounting")
    load.add_argument("--rate", type=float, default=1.0, help="groups started per s (%(default)s)")
    load.add_argument("--conversations", type=int, default=10, help="conversations (%(default)s)")
    load.add_argument("--duration", type=float, default=30.0, help="s of sending (%(default)s)")
    load.add_argument(
        "--messages-per-group", type=int, default=3, help="messages per group (%(default)s)"
    )
    load.add_argument("--gap", type=float, default=1.0, help="s between messages (%(default)s)")
    load.add_argument("--concurrency", type=int, default=16, help="worker threads (%(default)s)")
    load.add_argument(
        "--margin",
        type=float,
        default=1.0,
        help="extra quiet s beyond 5 s before a conversation's next group (%(default)s)",
    )
    load.add_argument(
        "--reply-wait",
        type=float,
        default=15.0,
        help="s to wait for replies beyond last send + 5 s (%(default)s)",
    )
    load.set_defaults(func=cmd_load)

    seed = sub.add_parser("seed", parents=[common], help="post the seed payloads of the brief")
    seed.add_argument("--close", action="store_true", help="also close the conversation")
    seed.set_defaults(func=cmd_seed)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ScenarioError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
