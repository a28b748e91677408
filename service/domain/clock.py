"""The service's arrival clock, in integer microseconds since the epoch.

Integer microseconds are exact both as PostgreSQL timestamps and as Redis sorted-set scores
(doubles hold integers up to 2**53), so the buffer and the database agree on every instant.
Tests replace `now_us` to control time.
"""

import time
from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def now_us():
    """Current time in microseconds."""
    return time.time_ns() // 1000


def to_datetime(us):
    """Microseconds since the epoch as an aware UTC datetime."""
    return EPOCH + timedelta(microseconds=int(us))


def to_us(moment):
    """An aware datetime as microseconds since the epoch."""
    delta = moment - EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def seconds_us(seconds):
    """A duration in seconds as microseconds."""
    return round(seconds * 1_000_000)
