"""A conversation's open group: buffering its arrivals and arming the flush that answers it."""

import logging

import redis.exceptions

from flask import current_app

from service.domain import clock
from service.domain.clock import seconds_us
from service.domain.rules import flush_due_us
from service.extensions import redis_client
from service.infra import queueing
from service.infra.buffer import ReplyBuffer

log = logging.getLogger(__name__)


def quiet_us():
    """The debounce window (QUIET_SECONDS, 5 s by the contract), in microseconds."""
    return seconds_us(current_app.config["QUIET_SECONDS"])


def hold_us():
    """The hold window (HOLD_SECONDS, 6 s by the contract), in microseconds."""
    return seconds_us(current_app.config["HOLD_SECONDS"])


# How long past its due time a pending flush may still be on its way before the next message
# of its conversation takes it as lost and arms another. Short, because a group extended
# after a lost flush is answered only by that new flush; a flush that was only late finds
# the group extended, re-arms, and the spare one finds nothing to do.
LOST_FLUSH_US = 1_000_000


def reply_buffer():
    """The app's reply buffer; its keys outlive the debounce window by 60 s."""
    ext = current_app.extensions
    if "reply_buffer" not in ext:
        ttl_ms = (current_app.config["QUIET_SECONDS"] + 60) * 1000
        ext["reply_buffer"] = ReplyBuffer(
            redis_client.client, quiet_us(), LOST_FLUSH_US, key_ttl_ms=ttl_ms
        )
    return ext["reply_buffer"]


def add_to_group(conversation_id, arrivals, now_us=None, notice=None, schedule=False):
    """Buffer (message_id, arrival_us) pairs, arming a flush if none is pending on time;
    `notice` is published in the same round trip, and with `schedule` the armed flush is put
    in the scheduler's schedule in it too (one message: see ReplyBuffer.add). Returns a
    buffer.Added, for `arm`.

    Raises redis.exceptions.RedisError when the buffer cannot be written.
    """
    now_us = clock.now_us() if now_us is None else now_us
    entry = None
    if schedule:
        entry = (queueing.get_scheduler().scheduled_jobs_key, queueing.flush_entry(conversation_id))
    return reply_buffer().add(conversation_id, arrivals, now_us, notice=notice, schedule=entry)


def arm(conversation_id, added):
    """After the commit: schedule the flush that `add_to_group` armed, if it armed one and did
    not schedule it itself; or, if it did and that flush is due already, queue another now.

    A later message of the same group does not move the pending flush: when that flush
    finds the group still active, it re-arms itself for the group's new end. That costs
    one Redis decision per extension in a worker instead of a round trip per message here.

    A flush scheduled by the buffer write comes due while the commit may still be on its way
    (a web process paused for the window's length between the two): it may then have found
    the row locked and given up. Queueing another one costs a round trip only then, and a
    flush that finds nothing is harmless.
    """
    due = flush_due_us(added.newest_us, quiet_us())
    if added.must_schedule or (added.scheduled and due <= clock.now_us()):
        schedule_flush(conversation_id, due)


def schedule_flush(conversation_id, due_us):
    """Arrange for the conversation's group to be looked at when it may be quiet.

    Called after the commit: if Redis fails now, the message is already safe in the
    database and `reconcile_groups` will arm its group, so the caller is not failed.
    """
    schedule_flushes({conversation_id: due_us})


def schedule_flushes(due):
    """`schedule_flush` for several conversations ({conversation_id: due_us}), in one or two
    Redis calls; never fails the caller either."""
    try:
        queueing.schedule_flushes(due)
    except redis.exceptions.RedisError as exc:
        for conversation_id in due:
            log.error(
                "flush_group_schedule_failed",
                extra={"conversation_id": str(conversation_id), "reason": str(exc)},
            )
