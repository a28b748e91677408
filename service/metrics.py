"""Prometheus metrics shared by web and worker processes."""

from prometheus_client import Counter, Histogram

EVENTS = Counter("webhook_events_total", "Webhook events by type and outcome", ["type", "outcome"])
HELD = Counter("held_messages_total", "Messages held while their conversation was unknown")
EXPIRED = Counter("expired_messages_total", "Held messages dropped after the hold window")
JOINED = Counter("joined_messages_total", "Held messages that joined their conversation")
REPLIES = Counter("replies_total", "Automatic replies generated", ["trigger"])
REPLY_LATENESS = Histogram(
    "reply_lateness_seconds",
    "Reply time minus the end of its group's quiet window",
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0, 10.0, 30.0),
)
FLUSHES = Counter("flush_group_total", "Flush job runs by decision", ["decision"])
RECONCILED = Counter("reconcile_groups_total", "Groups re-armed from the database")
