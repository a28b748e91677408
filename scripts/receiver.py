"""A reference receiver for the service's reply deliveries (``reply.created`` events signed per
Standard Webhooks; ../shared/SPEC.md, "Reply generation and delivery"): try delivery locally,
or stand in for a platform that fails, is slow or is down.

Run from the repository root: ``scripts/receiver --port 9000 --secret whsec_...`` (which
builds .venv when it is missing) or ``.venv/bin/python -m scripts.receiver ...``. It needs the
project's ``standardwebhooks`` library, so unlike ``scripts.replay`` not the bare ``python3``.

Each POST is, in this order: verified with ``standardwebhooks.Webhook(secret).verify`` against
every ``--secret`` (401 when none matches, the timestamp is off by more than 5 minutes, or a
header is missing); parsed (400 unless a JSON object); failed on purpose when told to fail the
next N events (over the control API), or when ``--status`` or ``--fail-rate`` says so (with
``Retry-After`` when ``--retry-after`` is given); otherwise
recorded, deduplicated on ``webhook-id`` (a repeat is answered 200 too, printed as a
duplicate) and printed, and answered 200 (after ``--slow`` seconds). ``--down-for`` keeps the
port closed (connections refused) for that long after the start. Replies of a conversation
that arrive older than one already received are flagged out of order.

With ``--control-port``, a second port serves a small JSON API to watch and drive the
receiver (the console's simulator uses it, from the origins of ``--allow-origin``):
``GET /state`` (what it is told to do, whether it is down, the counts), ``PATCH /state``
(``fail_next``, ``fail_status``, ``fail_rate``, ``retry_after``, ``slow``, ``down``,
``down_for``) and ``GET /events?after=N`` (what it got, newest last, each with ``verified`` and
``duplicate`` flags and the status it answered). Going down closes the receiving port and every
kept-alive connection, so senders get "connection refused" until it comes back.

Output: a readable line per event, or with ``--json`` one JSON object per line with an
``event`` key: ``down`` (with ``--down-for`` or when told), ``listening`` (once connections are
accepted), ``received``, ``duplicate``, ``failed`` (on purpose), ``rejected``, ``control`` (a
change made over the control API) and, on Ctrl-C or SIGTERM, ``stopped`` with the counts. Exit
codes: 0 after Ctrl-C or SIGTERM, 1 when its port was taken by another program while it was
down, 2 usage error (a malformed secret, a port in use).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import ipaddress
import json
import math
import os
import random
import secrets
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from standardwebhooks import Webhook, WebhookVerificationError

PROG = "scripts/receiver"
SECRET_PREFIX = "whsec_"
# Far above any reply (MAX_MESSAGE_CHARS is 4096): a bigger body is not from the service.
MAX_BODY_BYTES = 1 << 20
# A control request carries a few settings.
MAX_CONTROL_BYTES = 16 * 1024
DEFAULT_FAILURE_STATUS = 503
COUNTS = ("received", "duplicate", "failed", "rejected")
# The events GET /events can return: the newest ones, a few screens of them.
LOG_SIZE = 200
DEFAULT_EVENTS_LIMIT = 50
# The console of a default `make run` (scripts/run.sh passes the origins of its own PORT).
DEFAULT_ORIGINS = ("http://127.0.0.1:8000", "http://localhost:8000")
CONTROL_METHODS = "GET, PATCH, OPTIONS"


def new_secret() -> str:
    """A fresh signing secret in the Standard Webhooks form: ``whsec_`` + base64 of 32 random
    bytes (the specification asks for 24 to 64)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def parse_secrets(text: str) -> list[str]:
    """The comma-separated ``whsec_<base64>`` secrets of ``text`` (as REPLY_WEBHOOK_SECRET
    holds them, several while rotating). Raises ValueError naming a malformed one."""
    found = [item.strip() for item in text.split(",") if item.strip()]
    if not found:
        raise ValueError("no secret given")
    for secret in found:
        try:
            key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
        except binascii.Error:
            key = b""
        if not secret.startswith(SECRET_PREFIX) or not key:
            raise ValueError(f"a secret must look like {SECRET_PREFIX}<base64>: {secret[:12]!r}...")
    return found


def parse_origins(values: Iterable[str]) -> frozenset[str]:
    """The web origins (``http[s]://host[:port]``, as a browser sends them in ``Origin``)
    allowed to use the control API. Raises ValueError naming a malformed one."""
    found = set()
    for value in values:
        parts = urlsplit(value.strip())
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.path not in ("", "/")
            or parts.query
            or parts.fragment
        ):
            raise ValueError(f"--allow-origin must look like http://host:port, got {value!r}")
        found.add(f"{parts.scheme}://{parts.netloc}".lower())
    return frozenset(found)


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _now() -> datetime:
    return datetime.now(UTC)


def _stamp(moment: datetime | None = None) -> str:
    return (moment or _now()).isoformat().replace("+00:00", "Z")


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Answer:
    """The HTTP answer to one request: status, extra headers, JSON body."""

    status: int
    body: dict
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Options:
    """What the receiver does with a verified event: the next ``fail_next`` of them, then a
    ``fail_rate`` share (0..1) of the others, are answered ``fail_status`` (with
    ``Retry-After: retry_after`` when set); the rest 200 after ``slow`` seconds."""

    fail_status: int = DEFAULT_FAILURE_STATUS
    fail_rate: float = 0.0
    retry_after: int | None = None
    slow: float = 0.0
    fail_next: int = 0


def _integer(low: int, high: int) -> Callable[[str, object], int]:
    def check(name: str, value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"{name} must be an integer in {low}..{high}")
        return value

    return check


def _seconds(low: float, high: float, low_included: bool = True) -> Callable[[str, object], float]:
    def check(name: str, value: object) -> float:
        number = value if isinstance(value, int | float) and not isinstance(value, bool) else None
        if (
            number is None
            or not math.isfinite(number)
            or not (low <= number if low_included else low < number)
            or number > high
        ):
            bound = f"in {low:g}..{high:g}" if low_included else f"above {low:g}, at most {high:g}"
            raise ValueError(f"{name} must be a number {bound}")
        return float(number)

    return check


def _optional(check: Callable[[str, object], object]) -> Callable[[str, object], object]:
    return lambda name, value: None if value is None else check(name, value)


def _boolean(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false")
    return value


# The settings PATCH /state takes, each with its check. down_for: down now, back by itself after
# that many seconds.
SETTINGS: dict[str, Callable[[str, object], object]] = {
    "fail_next": _integer(0, 1_000_000),
    "fail_status": _integer(300, 599),
    "fail_rate": _seconds(0, 1),
    "retry_after": _optional(_integer(0, 86_400)),
    "slow": _seconds(0, 3_600),
    "down": _boolean,
    "down_for": _seconds(0, 86_400, low_included=False),
}


def check_changes(changes: object) -> dict:
    """The settings of a PATCH /state body, checked (all of them before any is applied).
    Raises ValueError saying what is wrong."""
    if not isinstance(changes, dict):
        raise ValueError("the body must be a JSON object of settings")
    unknown = sorted(set(changes) - set(SETTINGS))
    if unknown:
        raise ValueError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(SETTINGS)}")
    if "down" in changes and "down_for" in changes:
        raise ValueError("give down or down_for, not both")
    return {name: SETTINGS[name](name, value) for name, value in changes.items()}


class Switch:
    """Whether the receiving port is down (refusing connections) and until when: set by
    ``--down-for`` at the start and by the control API. The main thread opens and closes the
    port as it changes; request threads only read it."""

    def __init__(self, down_for: float = 0.0) -> None:
        self.changed = threading.Condition()
        # time.monotonic() when the port comes back; math.inf: when told; None: it is up.
        self.until: float | None = time.monotonic() + down_for if down_for > 0 else None
        self.stopping = False
        # What the port is, as opposed to what it should be: bound, not yet listening.
        self.port_down = True

    def _down(self) -> bool:
        if self.until is not None and time.monotonic() >= self.until:
            self.until = None
        return self.until is not None

    def seconds_left(self) -> float | None:
        """None while up; else the seconds until it comes back by itself (math.inf: never)."""
        with self.changed:
            return self.until - time.monotonic() if self._down() else None

    def set(self, down_seconds: float | None) -> None:
        """Go down for ``down_seconds`` (math.inf: until told otherwise), or up with None."""
        with self.changed:
            self.until = None if down_seconds is None else time.monotonic() + down_seconds
            self.changed.notify_all()

    def done(self, port_down: bool) -> None:
        """Called by the main thread once the port was closed (True) or opened (False)."""
        with self.changed:
            self.port_down = port_down
            self.changed.notify_all()

    def settle(self, timeout: float = 5.0) -> None:
        """Wait (up to ``timeout`` seconds) until the port is what it should be: a change
        answered over the control API has taken effect."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while not self.stopping and self.port_down != self._down():
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self.changed.wait(min(left, 0.5))

    def stop(self) -> None:
        with self.changed:
            self.stopping = True
            self.changed.notify_all()

    def wait(self, down: bool) -> bool:
        """Block until the port should be ``down`` (True) or up (False); False when the
        receiver stops first."""
        with self.changed:
            while not self.stopping and self._down() != down:
                timeout = 0.5
                if self.until is not None:
                    timeout = max(0.0, min(timeout, self.until - time.monotonic()))
                self.changed.wait(timeout)
            return not self.stopping


class Receiver:
    """The receiver's state, shared by the request threads: the verifiers, the webhook-ids seen
    (in memory, for the life of the process), the newest reply per conversation, counts, the
    options (changed by the control API) and the log of the latest events it read.
    ``emit`` gets one dict per event (the ``--json`` line)."""

    def __init__(
        self,
        secrets_: Sequence[str],
        options: Options,
        emit: Callable[[dict], None],
        rng: random.Random | None = None,
        switch: Switch | None = None,
    ) -> None:
        self.hooks = [Webhook(secret) for secret in secrets_]
        self.options = options
        self.emit = emit
        self.rng = rng or random.Random()
        self.switch = switch or Switch()
        self.lock = threading.Lock()
        self.seen: dict[str, tuple[int, object]] = {}  # webhook-id -> (times, event data)
        self.newest: dict[str, datetime] = {}  # conversation id -> newest reply created_at
        self.counts = dict.fromkeys(COUNTS, 0)
        self.log: deque[dict] = deque(maxlen=LOG_SIZE)
        self.sequence = 0
        self.url: str | None = None

    def tell(self, event: dict, **flags: object) -> None:
        """Print ``event`` and keep it, numbered and with ``flags``, in the log GET /events
        reads."""
        event = {"at": _stamp(), **event}
        with self.lock:
            self.sequence += 1
            self.log.append({"n": self.sequence, **event, **flags})
        self.emit(event)

    def handle(self, headers: Mapping[str, str], body: bytes) -> Answer:
        """Verify, maybe fail on purpose, dedupe and record one POST; the answer to send.
        ``headers`` keys are lower case."""
        try:
            text = body.decode()
        except UnicodeDecodeError:
            return self._reject(400, "body is not UTF-8", verified=False)
        reason = self._verify(text, headers)
        if reason is not None:
            return self._reject(401, reason, verified=False)
        try:
            event = json.loads(text)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            return self._reject(400, "body is not a JSON object", verified=True)
        webhook_id = headers["webhook-id"]
        summary = self._summary(webhook_id, event)
        failure = self._failure(summary)
        if failure is not None:
            return failure
        data = event.get("data")
        with self.lock:
            times, first_data = self.seen.get(webhook_id, (0, data))
            times += 1
            self.seen[webhook_id] = (times, first_data)
            duplicate = times > 1
            in_order = None if duplicate else self._in_order(summary)
            self.counts["duplicate" if duplicate else "received"] += 1
        flags = {"status": 200, "verified": True, "duplicate": duplicate}
        if duplicate:
            repeat = {"times": times, "changed": data != first_data}
            self.tell({"event": "duplicate", **summary, **repeat}, **flags)
        else:
            self.tell({"event": "received", **summary, "in_order": in_order}, **flags)
        return Answer(200, {"received": True, "duplicate": duplicate})

    def _verify(self, text: str, headers: Mapping[str, str]) -> str | None:
        """None when one secret verifies the request, else why none does."""
        reason = "no secret"
        for hook in self.hooks:
            try:
                hook.verify(text, dict(headers), json_parse=False)
                return None
            except WebhookVerificationError as exc:
                reason = str(exc)
            except ValueError:  # an entry of webhook-signature without "," or with bad base64
                reason = "malformed webhook-signature"
        return reason

    def _summary(self, webhook_id: str, event: dict) -> dict:
        """The printed fields of a verified event; latency = now - the reply's created_at."""
        data = event.get("data") if isinstance(event.get("data"), dict) else {}
        created = _parse_time(data.get("created_at"))
        latency = None if created is None else round((_now() - created).total_seconds(), 3)
        return {
            "webhook_id": webhook_id,
            "type": event.get("type"),
            "conversation_id": data.get("conversation_id"),
            "reply_id": data.get("reply_id"),
            "message_ids": data.get("message_ids"),
            "content": data.get("content"),
            "created_at": data.get("created_at"),
            "latency_seconds": latency,
        }

    def _failure(self, summary: dict) -> Answer | None:
        """The on-purpose failure answer for this event, or None to accept it."""
        options = self.options
        with self.lock:
            if options.fail_next > 0:
                options.fail_next -= 1
                fail = True
            else:
                fail = options.fail_rate > 0 and self.rng.random() < options.fail_rate
            if not fail:
                return None
            self.counts["failed"] += 1
            status, retry_after = options.fail_status, options.retry_after
            seen = summary["webhook_id"] in self.seen
        headers = {}
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        self.tell(
            {"event": "failed", "status": status, "retry_after": retry_after, **summary},
            verified=True,
            duplicate=seen,
        )
        return Answer(status, {"error": "failing on purpose"}, headers)

    def _in_order(self, summary: dict) -> bool | None:
        """Whether a new reply is no older than the newest one of its conversation received
        so far (None when it names no conversation or time). Call with the lock held."""
        created = _parse_time(summary["created_at"])
        conversation = summary["conversation_id"]
        if created is None or not isinstance(conversation, str):
            return None
        newest = self.newest.get(conversation)
        if newest is not None and created < newest:
            return False
        self.newest[conversation] = created
        return True

    def _reject(self, status: int, reason: str, verified: bool) -> Answer:
        with self.lock:
            self.counts["rejected"] += 1
        self.tell(
            {"event": "rejected", "status": status, "reason": reason},
            verified=verified,
            duplicate=False,
        )
        return Answer(status, {"error": "rejected", "message": reason})

    # --- the control API -------------------------------------------------------------------

    def state(self) -> dict:
        """GET /state: what the receiver is told to do, whether its port is down (``back_at``:
        when it comes back by itself, else null), its counts and the number of its newest
        event (``last``)."""
        left = self.switch.seconds_left()
        back_at = None
        if left is not None and left != math.inf:
            back_at = _stamp(_now() + timedelta(seconds=left))
        with self.lock:
            options = self.options
            return {
                "url": self.url,
                "down": left is not None,
                "back_at": back_at,
                "fail_next": options.fail_next,
                "fail_status": options.fail_status,
                "fail_rate": options.fail_rate,
                "retry_after": options.retry_after,
                "slow": options.slow,
                "counts": dict(self.counts),
                "last": self.sequence,
            }

    def change(self, changes: object) -> dict:
        """PATCH /state: apply the settings of ``changes`` (a decoded JSON body), all or none;
        the new state. Raises ValueError saying what is wrong."""
        checked = check_changes(changes)
        self.tell({"event": "control", "changes": checked})
        with self.lock:
            for name, value in checked.items():
                if hasattr(self.options, name):
                    setattr(self.options, name, value)
        if "down" in checked:
            self.switch.set(math.inf if checked["down"] else None)
        if "down_for" in checked:
            self.switch.set(checked["down_for"])
        self.switch.settle()
        return self.state()

    def events(self, after: int = 0, limit: int = DEFAULT_EVENTS_LIMIT) -> dict:
        """GET /events: the newest ``limit`` events numbered above ``after``, oldest first, with
        the state. ``last`` below ``after`` means the receiver was restarted."""
        with self.lock:
            found = [event for event in self.log if event["n"] > after][-limit:]
            last = self.sequence
        return {"events": found, "last": last, "state": self.state()}


class Handler(BaseHTTPRequestHandler):
    """POST: an event for the Receiver; GET: the counts so far (a readiness check)."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the service's requests.Session expects
    # Headers and body go out as separate writes: without TCP_NODELAY the body waits for the
    # client's delayed ACK (40 ms) on a kept-alive connection.
    disable_nagle_algorithm = True
    server: ReceiverServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server API)
        pass  # the Receiver prints what matters

    def _send(self, answer: Answer, close: bool = False) -> None:
        body = json.dumps(answer.body).encode()
        self.send_response(answer.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in answer.headers.items():
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        with self.server.receiver.lock:
            counts = dict(self.server.receiver.counts)
        self._send(Answer(200, counts))

    def do_POST(self) -> None:  # noqa: N802 (http.server API)
        receiver = self.server.receiver
        length = self.headers.get("Content-Length", "")
        if not length.isdigit() or "chunked" in self.headers.get("Transfer-Encoding", ""):
            self._send(Answer(411, {"error": "length_required"}), close=True)
            return
        if int(length) > MAX_BODY_BYTES:
            self._send(Answer(413, {"error": "too_large"}), close=True)
            return
        body = self.rfile.read(int(length))
        headers = {name.lower(): value for name, value in self.headers.items()}
        answer = receiver.handle(headers, body)
        if answer.status == 200 and receiver.options.slow > 0:
            # Event.wait, not sleep: going down or stopping does not wait for slow answers.
            self.server.stopping.wait(receiver.options.slow)
            if self.server.stopping.is_set():
                # A receiver that went down mid-answer never answers: the sender retries, and
                # its retry is a duplicate.
                self.close_connection = True
                return
        self._send(answer)


class ReceiverServer(ThreadingHTTPServer):
    """A threaded HTTP server carrying the Receiver; quiet about clients that hang up (the
    service gives up on a ``--slow`` answer after its timeout). It keeps its connections so
    that going down cuts the kept-alive ones too."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], receiver: Receiver) -> None:
        # Bound now (the port is taken and known), listening only once activate() is called:
        # until then connections are refused, as from a receiver that is down.
        super().__init__(address, Handler, bind_and_activate=False)
        self.receiver = receiver
        self.stopping = threading.Event()
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        try:
            self.server_bind()
        except OSError:
            self.server_close()
            raise

    def process_request(self, request, client_address) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def take_down(self) -> None:
        """Close the port and cut every connection, kept-alive or mid-answer (call once
        serve_forever has returned): senders get errors, not answers."""
        self.stopping.set()
        with self.connections_lock:
            cut = list(self.connections)
        for connection in cut:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.server_close()

    def handle_error(self, request: object, client_address: object) -> None:
        # OSError: a connection cut by going down, or the client's hanging up.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class ControlHandler(BaseHTTPRequestHandler):
    """The control API: GET /state, PATCH /state, GET /events, for callers without an
    ``Origin`` (curl, tests) and the web pages of the allowed origins (CORS)."""

    protocol_version = "HTTP/1.1"
    server: ControlServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server API)
        pass

    def _send(
        self, status: int, body: dict | None, headers: Mapping[str, str] | None = None
    ) -> None:
        data = b"" if body is None else json.dumps(body, ensure_ascii=False).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        origin = self.headers.get("Origin")
        if origin is not None and origin.lower() in self.server.origins:
            self.send_header("Access-Control-Allow-Origin", origin)
        self.send_header("Vary", "Origin")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _refused(self) -> bool:
        """Answer 403 and True for a request from elsewhere: a page of an origin not allowed,
        or (on a loopback address) a Host that is not a loopback name, as a DNS-rebinding page
        would send."""
        origin = self.headers.get("Origin")
        if origin is not None and origin.lower() not in self.server.origins:
            message = f"start the receiver with --allow-origin {origin} to allow this page"
            self._send(403, {"error": "origin_not_allowed", "message": message})
            return True
        host = self.headers.get("Host")
        if (
            self.server.loopback
            and host is not None
            and not _is_loopback(urlsplit(f"//{host}").hostname)
        ):
            self._send(403, {"error": "host_not_allowed", "message": f"unexpected Host {host}"})
            return True
        return False

    def do_OPTIONS(self) -> None:  # noqa: N802 (http.server API)
        """A CORS preflight (PATCH with a JSON body needs one)."""
        if self._refused():
            return
        headers = {
            "Access-Control-Allow-Methods": CONTROL_METHODS,
            "Access-Control-Allow-Headers": "Content-Type",
            "Access-Control-Max-Age": "600",
        }
        if self.headers.get("Access-Control-Request-Private-Network") == "true":
            headers["Access-Control-Allow-Private-Network"] = "true"
        self._send(204, None, headers)

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        if self._refused():
            return
        parts = urlsplit(self.path)
        receiver = self.server.receiver
        if parts.path in ("/", "/state"):
            self._send(200, receiver.state())
        elif parts.path == "/events":
            query = parse_qs(parts.query)
            try:
                after = _integer(0, 2**63)("after", int(query.get("after", ["0"])[-1]))
                limit = _integer(1, LOG_SIZE)(
                    "limit", int(query.get("limit", [str(DEFAULT_EVENTS_LIMIT)])[-1])
                )
            except ValueError:
                message = f"after must be an integer >= 0, limit one in 1..{LOG_SIZE}"
                self._send(400, {"error": "bad_request", "message": message})
                return
            self._send(200, receiver.events(after, limit))
        else:
            self._not_found()

    def do_PATCH(self) -> None:  # noqa: N802 (http.server API)
        if self._refused():
            return
        if urlsplit(self.path).path != "/state":
            self._not_found()
            return
        length = self.headers.get("Content-Length", "")
        if not length.isdigit() or int(length) > MAX_CONTROL_BYTES:
            self.close_connection = True
            self._send(413 if length.isdigit() else 411, {"error": "bad_length"})
            return
        try:
            changes = json.loads(self.rfile.read(int(length)) or b"null")
            state = self.server.receiver.change(changes)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            self._send(400, {"error": "bad_request", "message": str(exc)})
            return
        self._send(200, state)

    def do_POST(self) -> None:  # noqa: N802 (http.server API)
        if not self._refused():
            self._send(405, {"error": "method_not_allowed"}, {"Allow": CONTROL_METHODS})

    def _not_found(self) -> None:
        self._send(404, {"error": "not_found", "message": "GET /state, PATCH /state, GET /events"})


class ControlServer(ThreadingHTTPServer):
    """The control API's server: the Receiver, the allowed origins, and whether it listens on
    a loopback address (then Host must name one)."""

    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], receiver: Receiver, origins: frozenset[str]
    ) -> None:
        super().__init__(address, ControlHandler)
        self.receiver = receiver
        self.origins = origins
        self.loopback = _is_loopback(address[0])

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class Printer:
    """Writes events as readable lines or (``as_json``) JSON lines, one thread at a time."""

    def __init__(self, as_json: bool, out=None) -> None:
        self.as_json = as_json
        self.out = out or sys.stdout
        self.lock = threading.Lock()

    def __call__(self, event: dict) -> None:
        stamped = {"at": _stamp(), **event}
        text = json.dumps(stamped, ensure_ascii=False) if self.as_json else render(stamped)
        with self.lock:
            try:
                print(text, file=self.out, flush=True)
            except (BrokenPipeError, ValueError):  # reader gone, or stdout closed at exit
                pass


def render(event: dict) -> str:
    """One event as text for a person: a time, what happened, the ids, the reply's content."""
    clock = event["at"][11:19]
    kind = event["event"]
    if kind == "listening":
        control = f" (control API on {event['control_url']})" if event.get("control_url") else ""
        return f"{clock}  listening on {event['url']}{control} (Ctrl-C to stop)"
    if kind == "down":
        if event["seconds"] is None:
            return f"{clock}  down: {event['url']} refuses connections until told to come back"
        return f"{clock}  down for {event['seconds']:g} s: {event['url']} refuses connections"
    if kind == "control":
        changes = ", ".join(f"{name}={value}" for name, value in event["changes"].items())
        return f"{clock}  told       {changes or 'nothing'}"
    if kind == "rejected":
        return f"{clock}  rejected   {event['status']} {event['reason']}"
    if kind == "stopped":
        counts = ", ".join(f"{event[name]} {name}" for name in COUNTS)
        return f"{clock}  stopped: {counts}"
    ids = f"reply {event['reply_id']} conversation {event['conversation_id']}"
    if kind == "failed":
        after = "" if event["retry_after"] is None else f", Retry-After {event['retry_after']}"
        return f"{clock}  failed     {event['status']} on purpose{after}: {ids}"
    if kind == "duplicate":
        changed = "; its data CHANGED" if event["changed"] else ""
        return f"{clock}  duplicate  {ids} (received {event['times']} times{changed})"
    latency = event["latency_seconds"]
    lines = [
        f"{clock}  {event['type'] or 'event'}  {ids}",
        f"           answers {len(event['message_ids'] or [])} message(s)"
        + ("" if latency is None else f", {latency:.3f} s after the reply was stored"),
    ]
    if event["in_order"] is False:
        lines.append("           OUT OF ORDER: older than a reply already received")
    content = event["content"]
    if not isinstance(content, str):
        content = json.dumps(content)
    lines.extend(f"           | {line}" for line in content.rstrip("\n").split("\n"))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line of the receiver."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Receive the service's signed reply deliveries (Standard Webhooks), "
        "verify, dedupe and print them; optionally fail, be slow or be down.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    parser.add_argument(
        "--port", type=int, default=9000, help="port; 0 picks a free one (%(default)s)"
    )
    parser.add_argument(
        "--secret",
        default=os.environ.get("REPLY_WEBHOOK_SECRET") or None,
        help="whsec_... secret(s), comma-separated (default: $REPLY_WEBHOOK_SECRET; "
        "none: a new one is made and printed)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument(
        "--status",
        type=int,
        help="answer verified events with this status (300-599) instead of 200; "
        f"with --fail-rate only that share of them (default {DEFAULT_FAILURE_STATUS})",
    )
    parser.add_argument(
        "--fail-rate", type=float, help="share of verified events to fail, 0..1 (e.g. 0.3)"
    )
    parser.add_argument(
        "--retry-after", type=int, help="send Retry-After: N (seconds) with the failures"
    )
    parser.add_argument("--slow", type=float, default=0.0, help="answer 200s after S seconds")
    parser.add_argument(
        "--down-for", type=float, default=0.0, help="refuse connections for S s after the start"
    )
    parser.add_argument("--seed", type=int, help="random seed for --fail-rate (repeatable runs)")
    parser.add_argument(
        "--control-port",
        type=int,
        help="serve the control API (GET/PATCH /state, GET /events) on this port, e.g. 9001; "
        "0 picks a free one (default: off)",
    )
    parser.add_argument(
        "--allow-origin",
        action="append",
        metavar="ORIGIN",
        help="a web page origin that may use the control API, e.g. http://127.0.0.1:8000; "
        f"repeatable (default: {' and '.join(DEFAULT_ORIGINS)}, the console of `make run`)",
    )
    return parser


def options_from(args: argparse.Namespace) -> Options:
    """Options from parsed arguments. Raises ValueError on values out of range."""
    if args.status is not None and not 300 <= args.status <= 599:
        raise ValueError("--status must be in 300-599 (a failure; 200 is the default answer)")
    if args.fail_rate is not None and not 0 <= args.fail_rate <= 1:
        raise ValueError("--fail-rate must be in 0..1")
    failing = args.status is not None or bool(args.fail_rate)
    if args.retry_after is not None and (args.retry_after < 0 or not failing):
        raise ValueError("--retry-after needs --status or --fail-rate, and N >= 0")
    if args.slow < 0 or args.down_for < 0:
        raise ValueError("--slow and --down-for must be >= 0")
    rate = args.fail_rate if args.fail_rate is not None else 1.0 if args.status else 0.0
    return Options(
        fail_status=args.status or DEFAULT_FAILURE_STATUS,
        fail_rate=rate,
        retry_after=args.retry_after,
        slow=args.slow,
    )


class Stop(Exception):
    """SIGTERM, handled like Ctrl-C."""


def _raise_stop(signum: int, frame: object) -> None:
    raise Stop


def _url(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}/"


def serve(server: ReceiverServer, receiver: Receiver, extra: dict) -> None:
    """Open, close and reopen the receiving port as the receiver's Switch says, until it
    stops (then returns) or Ctrl-C / SIGTERM (raised). ``extra``: fields of ``listening``."""
    address = server.server_address[:2]
    url = _url(server)
    switch = receiver.switch
    serving = None
    left = switch.seconds_left()
    try:
        while True:
            # Told before the change is reported done (Switch.done), so a PATCH /state that
            # returns finds it in the log.
            if left is not None:
                seconds = None if left == math.inf else round(left, 3)
                receiver.tell({"event": "down", "url": url, "port": address[1], "seconds": seconds})
                switch.done(port_down=True)
                if not switch.wait(down=False):
                    return
            server.server_activate()
            # Told once connections are accepted: a reader may send as soon as it sees it.
            receiver.tell({"event": "listening", "url": url, "port": address[1], **extra})
            switch.done(port_down=False)
            serving = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
            )
            serving.start()
            if not switch.wait(down=True):
                return
            server.shutdown()
            serving = None
            server.take_down()
            # Bound again at once, so the port stays ours while it refuses connections.
            server = ReceiverServer(address, receiver)
            left = switch.seconds_left() or 0.0
    finally:
        if serving is not None:
            server.shutdown()
        server.take_down()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the receiver until Ctrl-C or SIGTERM; the exit code."""
    args = build_parser().parse_args(argv)
    emit = Printer(args.json)
    generated = args.secret is None
    server = control = None
    try:
        options = options_from(args)
        keys = [new_secret()] if generated else parse_secrets(args.secret)
        origins = parse_origins(args.allow_origin or DEFAULT_ORIGINS)
        receiver = Receiver(keys, options, emit, random.Random(args.seed), Switch(args.down_for))
        server = ReceiverServer((args.host, args.port), receiver)
        if args.control_port is not None:
            control = ControlServer((args.host, args.control_port), receiver, origins)
    except (ValueError, OSError) as exc:
        if server is not None:
            server.server_close()
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    url = receiver.url = _url(server)
    extra: dict = {"secret_generated": generated}
    if control is not None:
        extra["control_url"] = _url(control)
        threading.Thread(
            target=control.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        ).start()
    if generated:
        # On stderr: the secret is for the person starting the service, not for the JSON lines.
        print(
            f"No --secret or $REPLY_WEBHOOK_SECRET: signing secret made for this run.\n"
            f"Start the service with:\n"
            f"  REPLY_WEBHOOK_URL={url} REPLY_WEBHOOK_SECRET={keys[0]} make run\n"
            f"and restart this receiver with --secret {keys[0]} to keep it.",
            file=sys.stderr,
            flush=True,
        )
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    code = 0
    try:
        serve(server, receiver, extra)
    except (KeyboardInterrupt, Stop):
        pass
    except OSError as exc:  # the port, taken by another program while down
        print(f"{PROG}: error: cannot take {url} back: {exc}", file=sys.stderr)
        code = 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        receiver.switch.stop()
        if control is not None:
            control.shutdown()
            control.server_close()
    with receiver.lock:
        emit({"event": "stopped", **receiver.counts})
    return code


if __name__ == "__main__":
    sys.exit(main())
