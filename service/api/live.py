"""Live view for consoles: notices published on Redis pub/sub (service.infra.notices),
streamed as server-sent events, and the console's built files.

Any web process can stream what any web or worker process published. Each open stream holds
one gunicorn thread, so streams get a bounded number of slots per process (STREAM_SLOTS) and
the webhook path always keeps the rest; a stream also ends after STREAM_MAX_SECONDS, and the
console's stream client reconnects on its own. With API_TOKEN set, the stream needs the bearer
token like the reads (service.api.access); the console's files stay open.
"""

import json
import logging
import threading
import time
from pathlib import Path

import redis.exceptions

from flask import Blueprint, Response, current_app, send_from_directory

from service.api.access import API, token_required
from service.api.errors import unavailable
from service.extensions import redis_client
from service.infra.notices import channel

PING_SECONDS = 5
log = logging.getLogger(__name__)
bp = Blueprint("live", __name__)


@bp.get("/events/stream")
@token_required(API)
def stream():
    """Server-sent events: conversation.*, message.*, reply.created."""
    slots = current_app.extensions["stream_slots"]
    if not slots.acquire(blocking=False):
        return unavailable("Too many open live streams on this process; retry shortly.")
    try:
        pubsub = redis_client.client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(channel())
    except redis.exceptions.RedisError:
        slots.release()
        raise
    max_seconds = current_app.config["STREAM_MAX_SECONDS"]

    def events():
        started = last_sent = time.monotonic()
        try:
            yield "retry: 2000\n: connected\n\n"
            while time.monotonic() - started < max_seconds:
                message = pubsub.get_message(timeout=1.0)
                if message is not None:
                    data = message["data"].decode()
                    name = json.loads(data).get("event", "message")
                    yield f"event: {name}\ndata: {data}\n\n"
                    last_sent = time.monotonic()
                elif time.monotonic() - last_sent >= PING_SECONDS:
                    # Also how a closed browser tab is noticed: the write fails.
                    yield ": ping\n\n"
                    last_sent = time.monotonic()
        except redis.exceptions.RedisError as exc:
            log.warning("live_stream_ended", extra={"reason": str(exc)})
        finally:
            pubsub.close()
            slots.release()

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return Response(events(), mimetype="text/event-stream", headers=headers)


def console_dist():
    return Path(current_app.config["CONSOLE_DIST"])


@bp.get("/ui/")
@bp.get("/ui/<path:filename>")
def console(filename="index.html"):
    """The web console's built files; unknown paths get the app shell."""
    dist = console_dist()
    if not (dist / "index.html").is_file():
        return unavailable("The console is not built: run 'make console' (needs npm).")
    if not (dist / filename).is_file():
        filename = "index.html"
    response = send_from_directory(dist, filename, max_age=0 if filename == "index.html" else 3600)
    return response


def init_app(app):
    app.extensions["stream_slots"] = threading.BoundedSemaphore(app.config["STREAM_SLOTS"])
    app.register_blueprint(bp)
