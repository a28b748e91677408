"""Shared by the replay tests: an in-process fake of the service that replies instantly
instead of after 5 s, and the pattern of the uuid4 a ``{name}`` placeholder becomes."""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from scripts.replay.events import REPLY_PREFIX

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


@dataclass
class FakeState:
    conversations: dict[str, dict] = field(default_factory=dict)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    token: str | None = None  # when set, reads need "Authorization: Bearer <token>" (API_TOKEN)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle_event(self, event: dict) -> tuple[int, dict]:
        kind, data, stamp = event["type"], event["data"], event["timestamp"]
        if kind == "NEW_CONVERSATION":
            if data["id"] in self.conversations:
                return 400, {"code": 400, "error": "conversation_exists"}
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
            if conv is None or conv["status"] == "CLOSED":
                return 400, {
                    "code": 400,
                    "error": "conversation_not_found" if conv is None else "conversation_closed",
                }
            conv["status"] = "CLOSED"
            return 200, {"id": data["id"]}
        if conv is None:
            return 202, {"id": data["id"]}
        if conv["status"] == "CLOSED":
            return 400, {"code": 400, "error": "conversation_closed"}
        if any(m["id"] == data["id"] for m in conv["messages"]):
            return 400, {"code": 400, "error": "duplicate_message"}
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
                    "content": f"{REPLY_PREFIX}{data['id']}\n",
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
        if state.token and self.headers.get("Authorization") != f"Bearer {state.token}":
            self._send(401, {"code": 401, "error": "unauthorized"})
            return
        with state.lock:
            conv = state.conversations.get(match.group(1)) if match else None
            self._send(200, conv) if conv else self._send(404, {"error": "not_found"})
