"""Live notices: what happened, published on Redis pub/sub for the consoles' live stream.

Any web or worker process publishes; the stream (service.api.live) relays them to browsers
as server-sent events. A notice is never the record of anything, so publishing never fails
the work it describes.

Pub/sub channels belong to the whole Redis server, not to a database index: two deployments
that share a server through different `REDIS_URL` databases would see each other's notices
on one fixed channel. So the channel is named after the deployment's database index
(`conversations:live:db<N>`), or set whole with LIVE_CHANNEL (service.config).
"""

import functools
import json
import logging

import redis.exceptions
from redis.connection import parse_url

from flask import current_app

CHANNEL_PREFIX = "conversations:live"
log = logging.getLogger(__name__)


def channel():
    """The name of this deployment's live channel: LIVE_CHANNEL when set, else
    `conversations:live:db<N>` with N the database index of REDIS_URL (0 when it names none).

    Publishers and the stream both call it, inside the app context.
    """
    config = current_app.config
    return config.get("LIVE_CHANNEL") or default_channel(config["REDIS_URL"])


@functools.cache
def default_channel(redis_url):
    """`conversations:live:db<N>` for a Redis URL, its index read as redis-py reads it (the
    path, or `?db=` for a unix socket)."""
    return f"{CHANNEL_PREFIX}:db{int(parse_url(redis_url).get('db') or 0)}"


def notice(event, **payload):
    """The (channel, text) of a live event, for publishing it in another Redis call.

    `payload` values may be ids, datetimes (sent as ISO-8601) or lists of them.
    """
    text = json.dumps({"event": event, **{k: _plain(v) for k, v in payload.items()}})
    return channel(), text


def publish(client, event, **payload):
    """Tell open consoles that something happened; never fails the caller."""
    try:
        client.publish(*notice(event, **payload))
    except redis.exceptions.RedisError as exc:
        log.warning("live_publish_failed", extra={"event": event, "reason": str(exc)})


def _plain(value):
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value if isinstance(value, int | float | bool | type(None)) else str(value)
