"""Live notifications for consoles: Redis pub/sub, so any web process can stream any event."""

import json
import logging

import redis.exceptions

CHANNEL = "conversations:events"
log = logging.getLogger(__name__)


def publish(client, event, **payload):
    """Tell open consoles that something happened; never fails the caller."""
    body = {"event": event, **{k: _plain(v) for k, v in payload.items()}}
    try:
        client.publish(CHANNEL, json.dumps(body))
    except redis.exceptions.RedisError as exc:
        log.warning("live_publish_failed", extra={"event": event, "reason": str(exc)})


def _plain(value):
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value if isinstance(value, int | float | bool | type(None)) else str(value)
