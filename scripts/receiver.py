"""A reference receiver for the service's reply deliveries (``reply.created`` events signed per
Standard Webhooks; ../shared/SPEC.md, "Reply generation and delivery"): try delivery locally,
or stand in for a platform that fails, is slow or is down.

Run from the repository root: ``scripts/receiver --port 9000 --secret whsec_...`` (which
builds .venv when it is missing) or ``.venv/bin/python -m scripts.receiver ...``. It needs the
project's ``standardwebhooks`` library, so unlike ``scripts.replay`` not the bare ``python3``.

Each POST is, in this order: verified with ``standardwebhooks.Webhook(secret).verify`` against
every ``--secret`` (401 when none matches, the timestamp is off by more than 5 minutes, or a
header is missing); parsed (400 unless a JSON object); failed on purpose when ``--status`` or
``--fail-rate`` says so (with ``Retry-After`` when ``--retry-after`` is given); otherwise
recorded, deduplicated on ``webhook-id`` (a repeat is answered 200 too, printed as a
duplicate) and printed, and answered 200 (after ``--slow`` seconds). ``--down-for`` keeps the
port closed (connections refused) for that long after the start. Replies of a conversation
that arrive older than one already received are flagged out of order.

Output: a readable line per event, or with ``--json`` one JSON object per line with an
``event`` key: ``down`` (with ``--down-for``), ``listening`` (once connections are accepted),
``received``, ``duplicate``, ``failed`` (on purpose), ``rejected`` and, on Ctrl-C or SIGTERM,
``stopped`` with the counts. Exit codes: 0 after Ctrl-C or SIGTERM, 2 usage error (a malformed
secret, a port in use).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import random
import secrets
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook, WebhookVerificationError

PROG = "scripts/receiver"
SECRET_PREFIX = "whsec_"
# Far above any reply (MAX_MESSAGE_CHARS is 4096): a bigger body is not from the service.
MAX_BODY_BYTES = 1 << 20
DEFAULT_FAILURE_STATUS = 503
COUNTS = ("received", "duplicate", "failed", "rejected")


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


def _now() -> datetime:
    return datetime.now(UTC)


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
    """What the receiver does with a verified event. ``fail_rate`` (0..1) of them are answered
    ``fail_status`` (with ``Retry-After: retry_after`` when set); the others after ``slow``
    seconds."""

    fail_status: int = DEFAULT_FAILURE_STATUS
    fail_rate: float = 0.0
    retry_after: int | None = None
    slow: float = 0.0


class Receiver:
    """The receiver's state, shared by the request threads: the verifiers, the webhook-ids seen
    (in memory, for the life of the process), the newest reply per conversation and counts.
    ``emit`` gets one dict per event (the ``--json`` line)."""

    def __init__(
        self,
        secrets_: Sequence[str],
        options: Options,
        emit: Callable[[dict], None],
        rng: random.Random | None = None,
    ) -> None:
        self.hooks = [Webhook(secret) for secret in secrets_]
        self.options = options
        self.emit = emit
        self.rng = rng or random.Random()
        self.lock = threading.Lock()
        self.seen: dict[str, tuple[int, object]] = {}  # webhook-id -> (times, event data)
        self.newest: dict[str, datetime] = {}  # conversation id -> newest reply created_at
        self.counts = dict.fromkeys(COUNTS, 0)

    def handle(self, headers: Mapping[str, str], body: bytes) -> Answer:
        """Verify, maybe fail on purpose, dedupe and record one POST; the answer to send.
        ``headers`` keys are lower case."""
        try:
            text = body.decode()
        except UnicodeDecodeError:
            return self._reject(400, "body is not UTF-8")
        reason = self._verify(text, headers)
        if reason is not None:
            return self._reject(401, reason)
        try:
            event = json.loads(text)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            return self._reject(400, "body is not a JSON object")
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
        if duplicate:
            self.emit(
                {"event": "duplicate", **summary, "times": times, "changed": data != first_data}
            )
        else:
            self.emit({"event": "received", **summary, "in_order": in_order})
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
            fail = options.fail_rate > 0 and self.rng.random() < options.fail_rate
            if fail:
                self.counts["failed"] += 1
        if not fail:
            return None
        headers = {}
        if options.retry_after is not None:
            headers["Retry-After"] = str(options.retry_after)
        self.emit(
            {
                "event": "failed",
                "status": options.fail_status,
                "retry_after": options.retry_after,
                **summary,
            }
        )
        return Answer(options.fail_status, {"error": "failing on purpose"}, headers)

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

    def _reject(self, status: int, reason: str) -> Answer:
        with self.lock:
            self.counts["rejected"] += 1
        self.emit({"event": "rejected", "status": status, "reason": reason})
        return Answer(status, {"error": "rejected", "message": reason})


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
            # Event.wait, not sleep: a stop does not wait for slow answers.
            self.server.stopping.wait(receiver.options.slow)
        self._send(answer)


class ReceiverServer(ThreadingHTTPServer):
    """A threaded HTTP server carrying the Receiver; quiet about clients that hang up (the
    service gives up on a ``--slow`` answer after its timeout)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], receiver: Receiver) -> None:
        # Bound now (the port is taken and known), listening only once activate() is called:
        # until then connections are refused, as from a receiver that is down.
        super().__init__(address, Handler, bind_and_activate=False)
        self.receiver = receiver
        self.stopping = threading.Event()
        try:
            self.server_bind()
        except OSError:
            self.server_close()
            raise

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
        stamped = {"at": _now().isoformat().replace("+00:00", "Z"), **event}
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
        return f"{clock}  listening on {event['url']} (Ctrl-C to stop)"
    if kind == "down":
        return f"{clock}  down for {event['seconds']:g} s: {event['url']} refuses connections"
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the receiver until Ctrl-C or SIGTERM; the exit code."""
    args = build_parser().parse_args(argv)
    emit = Printer(args.json)
    generated = args.secret is None
    try:
        options = options_from(args)
        keys = [new_secret()] if generated else parse_secrets(args.secret)
        receiver = Receiver(keys, options, emit, random.Random(args.seed))
        server = ReceiverServer((args.host, args.port), receiver)
    except (ValueError, OSError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    host, port = server.server_address[:2]
    url = f"http://{host}:{port}/"
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
    try:
        if args.down_for > 0:
            emit({"event": "down", "url": url, "port": port, "seconds": args.down_for})
            server.stopping.wait(args.down_for)
        server.server_activate()
        # Printed once connections are accepted: a reader may send as soon as it sees it.
        emit({"event": "listening", "url": url, "port": port, "secret_generated": generated})
        server.serve_forever(poll_interval=0.1)
    except (KeyboardInterrupt, Stop):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.stopping.set()
        server.server_close()
    with receiver.lock:
        emit({"event": "stopped", **receiver.counts})
    return 0


if __name__ == "__main__":
    sys.exit(main())
