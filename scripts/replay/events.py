"""Webhook events as the service receives them, the ``{name}`` placeholders scenarios use, and
the automatic replies as the service stores them.

Time values are RFC 3339 UTC strings on the wire and epoch seconds (float) in Python.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

Json = Any  # a decoded JSON value: dict, list, str, int, float, bool or None

EVENT_TYPES = ("NEW_CONVERSATION", "NEW_MESSAGE", "CLOSE_CONVERSATION")
DIRECTIONS = ("RECEIVED", "SENT")
REPLY_PREFIX = "Mensagens recebidas:\n"
# The answer to an accepted event of each type (../shared/SPEC.md, "Events in"): what a step
# of a JSON-lines file or the seed is expected to get unless it says otherwise.
ACCEPTED_STATUS = {"NEW_CONVERSATION": 201, "NEW_MESSAGE": 202, "CLOSE_CONVERSATION": 200}

SEED_CONVERSATION_ID = "6a41b347-8d80-4ce9-84ba-7af66f369f6a"
SEED_MESSAGE_ID = "49108c71-4dca-4af3-9f32-61bc745926e2"
SEED_CONTENT = "Olá, quero informações sobre alugar um apartamento."


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
        """The value of ``{name}``: the send time for ``now``, else this instance's uuid4."""
        if name == "now":
            return self._clock()
        if name not in self.values:
            self.values[name] = self._factory()
        return self.values[name]

    def substitute(self, obj: Json) -> Json:
        """A copy of ``obj`` with every ``{name}`` in its strings replaced; keys are kept."""
        if isinstance(obj, str):
            return PLACEHOLDER_RE.sub(lambda match: self.value(match.group(1)), obj)
        if isinstance(obj, dict):
            return {key: self.substitute(value) for key, value in obj.items()}
        if isinstance(obj, list):
            return [self.substitute(value) for value in obj]
        return obj


UUID_TEXT_RE = re.compile(r"^[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$")


class FreshIds:
    """Replace every id written out in events by a new uuid4, the same one for the same id.

    A string value that is a UUID in its usual 8-4-4-4-12 form (any case) is an id; one mapping
    per instance (per run), so the conversation a message names is the one the run created.
    Replaying the same file or the seed twice then creates new conversations instead of
    answering 400 ``conversation_exists``.
    """

    def __init__(self, factory: Callable[[], str] = lambda: str(uuid.uuid4())) -> None:
        self._factory = factory
        self.values: dict[str, str] = {}  # original id (lower case) -> its replacement

    def value(self, ident: str) -> str:
        """The replacement of ``ident``, made on first use."""
        key = ident.lower()
        if key not in self.values:
            self.values[key] = self._factory()
        return self.values[key]

    def rewrite(self, obj: Json) -> Json:
        """A copy of ``obj`` with every UUID string replaced; keys and other values are kept."""
        if isinstance(obj, str):
            return self.value(obj) if UUID_TEXT_RE.match(obj) else obj
        if isinstance(obj, dict):
            return {key: self.rewrite(value) for key, value in obj.items()}
        if isinstance(obj, list):
            return [self.rewrite(value) for value in obj]
        return obj


def new_conversation_event(conversation_id: str, timestamp: str | None = None) -> dict:
    """``{"type": "NEW_CONVERSATION", "timestamp", "data": {"id"}}``; RFC 3339, default now."""
    return _conversation_event("NEW_CONVERSATION", conversation_id, timestamp)


def new_message_event(
    conversation_id: str,
    message_id: str,
    content: str,
    timestamp: str | None = None,
    direction: str | None = None,
) -> dict:
    """``{"type": "NEW_MESSAGE", "timestamp", "data": {"id", "content", "conversation_id"}}``.

    ``data.direction`` (``RECEIVED`` or ``SENT``) only when given; ``timestamp`` (RFC 3339)
    defaults to now.
    """
    data = {"id": message_id, "content": content, "conversation_id": conversation_id}
    if direction:
        data["direction"] = direction
    return {"type": "NEW_MESSAGE", "timestamp": timestamp or utc_now_iso(), "data": data}


def close_conversation_event(conversation_id: str, timestamp: str | None = None) -> dict:
    """``{"type": "CLOSE_CONVERSATION", "timestamp", "data": {"id"}}``; RFC 3339, default now."""
    return _conversation_event("CLOSE_CONVERSATION", conversation_id, timestamp)


def _conversation_event(kind: str, conversation_id: str, timestamp: str | None) -> dict:
    return {"type": kind, "timestamp": timestamp or utc_now_iso(), "data": {"id": conversation_id}}


def seed_events(close: bool = False) -> list[dict]:
    """The exact seed payloads of the brief: conversation, message and (if ``close``) close."""
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
    """``"TYPE id"`` for a log line, with ``?`` for whatever a malformed event lacks."""
    data = event.get("data") if isinstance(event, dict) else None
    ident = data.get("id") if isinstance(data, dict) else None
    kind = event.get("type") if isinstance(event, dict) else None
    return f"{kind or '?'} {ident or '?'}"


@dataclass
class Reply:
    """One automatic reply: its own message id, the ids it lists, its RFC 3339 ``timestamp``."""

    message_id: str | None
    ids: list[str]
    timestamp: str | None


def parse_reply(content: Any) -> list[str] | None:
    """Message ids listed by an automatic reply, or ``None`` if ``content`` is not a reply."""
    if not isinstance(content, str) or not content.startswith(REPLY_PREFIX):
        return None
    return [line for line in content[len(REPLY_PREFIX) :].split("\n") if line]


def replies_of(conversation: Json, generated: dict[str, list[str]] | None = None) -> list[Reply]:
    """The automatic replies of a conversation: OUTBOUND messages with the reply prefix, and
    those that ``generated`` (reply id -> the ids of its group, from ``GET /generations/``)
    names, which the team's bot wrote with a content of its own."""
    replies = []
    for message in conversation.get("messages") or []:
        if message.get("type") != "OUTBOUND":
            continue
        ids = parse_reply(message.get("content"))
        if ids is None and generated:
            ids = generated.get(message.get("id"))
        if ids is not None:
            replies.append(Reply(message.get("id"), ids, message.get("timestamp")))
    return replies


def generated_groups(response_body: Any) -> dict[str, list[str]]:
    """Reply id -> message ids of a ``GET /generations/`` page (empty for anything else)."""
    items = response_body.get("items") if isinstance(response_body, dict) else None
    return {
        item["reply_id"]: list(item.get("message_ids") or [])
        for item in items or []
        if isinstance(item, dict) and isinstance(item.get("reply_id"), str)
    }
