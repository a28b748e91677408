"""A reference reply generator (the team's bot) for REPLY_GENERATOR_URL (../shared/SPEC.md,
"Reply generation and delivery"): try the generator locally, or stand in for a bot that
fails or is slow.

Run from the repository root: ``python3 -m scripts.bot --port 9100`` (standard library only),
then start the service with ``REPLY_GENERATOR_URL=http://127.0.0.1:9100/``.

Each POST carries a closed group (``group.closed``: conversation id, reply id, the group's
messages) and is answered 200 with ``{"content": ...}``: ``--reply`` with ``{count}`` and
``{contents}`` filled in. The ``Idempotency-Key`` header (the reply id) is honoured the way the
IETF draft describes: a repeat gets the answer the first call got, not a new one. A call fails
on purpose with ``--status`` (every call) or ``--fail-rate`` (that share of calls); ``--slow``
waits that many seconds first (longer than the service's REPLY_GENERATOR_TIMEOUT_SECONDS makes
it retry). One line is printed per call (``--json``: one JSON object per line). Exit codes: 0
after Ctrl-C or SIGTERM, 2 when the port is taken.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PROG = "python3 -m scripts.bot"
MAX_BODY_BYTES = 1 << 20
DEFAULT_REPLY = "Olá! Recebemos {count} mensagem(ns): {contents}"


class Bot:
    """The answers given so far, by idempotency key, and how to answer the next call."""

    def __init__(self, args: argparse.Namespace, emit) -> None:
        self.args = args
        self.emit = emit
        self.random = random.Random(args.seed)
        self.lock = threading.Lock()
        self.answers: dict[str, str] = {}

    def answer(self, key: str | None, group: dict) -> tuple[int, dict]:
        """The status and JSON body for one call."""
        messages = group.get("messages") or []
        with self.lock:
            if key and key in self.answers:
                self.emit({"event": "repeat", "key": key})
                return 200, {"content": self.answers[key]}
            fail = self.args.status or (
                self.random.random() < self.args.fail_rate and self.args.fail_status
            )
        if fail:
            self.emit({"event": "failed", "key": key, "status": fail})
            return fail, {"error": "failed on purpose"}
        if self.args.slow > 0:
            time.sleep(self.args.slow)
        contents = " / ".join(str(m.get("content", "")) for m in messages)
        content = self.args.reply.format(count=len(messages), contents=contents)
        with self.lock:
            content = self.answers.setdefault(key, content) if key else content
        self.emit(
            {
                "event": "answered",
                "key": key,
                "conversation_id": group.get("conversation_id"),
                "messages": len(messages),
                "content": content,
            }
        )
        return 200, {"content": content}


class Handler(BaseHTTPRequestHandler):
    server: BotServer
    protocol_version = "HTTP/1.1"  # keep-alive, as the service's requests.Session expects
    # Headers and body go out as separate writes: without TCP_NODELAY the body waits for the
    # client's delayed ACK (40 ms) on a kept-alive connection.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server API)
        pass

    def do_POST(self) -> None:  # noqa: N802 (http.server API)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            return self._send(413, {"error": "too large"})
        try:
            group = json.loads(self.rfile.read(length))
            if not isinstance(group, dict):
                raise ValueError("not an object")
        except ValueError:
            return self._send(400, {"error": "a JSON object is expected"})
        status, body = self.server.bot.answer(self.headers.get("Idempotency-Key"), group)
        self._send(status, body)

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body, ensure_ascii=False).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            # The service gave up waiting (--slow past its timeout) and asks again later.
            self.close_connection = True


class BotServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], bot: Bot) -> None:
        super().__init__(address, Handler)
        self.bot = bot


def printer(as_json: bool):
    def emit(event: dict) -> None:
        if as_json:
            print(json.dumps(event, ensure_ascii=False), flush=True)
        elif event["event"] == "answered":
            print(f"answered {event['key']}: {event['content']}", flush=True)
        else:
            details = " ".join(f"{k}={v}" for k, v in event.items() if k != "event")
            print(f"{event['event']} {details}", flush=True)

    return emit


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    parser.add_argument("--port", type=int, default=9100, help="port (%(default)s; 0: any)")
    parser.add_argument("--reply", default=DEFAULT_REPLY, help="answer, with {count} {contents}")
    parser.add_argument("--status", type=int, default=0, help="fail every call with this status")
    parser.add_argument("--fail-rate", type=float, default=0.0, help="fail this share of calls")
    parser.add_argument(
        "--fail-status", type=int, default=503, help="status of --fail-rate (%(default)s)"
    )
    parser.add_argument("--slow", type=float, default=0.0, help="answer after S seconds")
    parser.add_argument("--seed", type=int, help="random seed for --fail-rate")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    return parser


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run the bot until Ctrl-C or SIGTERM; the exit code."""
    args = build_parser().parse_args(argv)
    emit = printer(args.json)
    try:
        server = BotServer((args.host, args.port), Bot(args, emit))
    except OSError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    host, port = server.server_address[:2]
    emit({"event": "listening", "url": f"http://{host}:{port}/", "port": port})
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
