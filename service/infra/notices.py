"""Live notices: what happened, published on Redis pub/sub for the consoles' live stream.

Any web or worker process publishes; the stream (service.api.live) relays them to browsers
as server-sent events. A notice is never the record of anything, so publishing never fails
the work it describes.
"""

import json
import logging

import redis.exceptions

# Pub/sub channels ignore the database index: one channel name per deployment.
CHANNEL = "conversations:events"
log = logging.getLogger(__name__)


def notice(event, **payload):
    """The (channel, text) of a live event, for publishing it in another Redis call.

    `payload` values may be ids, datetimes (sent as ISO-8601) or lists of them.
    """
    return CHANNEL, json.dumps({"event": event, **{k: _plain(v) for k, v in payload.items()}})


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
