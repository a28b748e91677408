"""NEW_MESSAGE: accept a message into its conversation's open group, or hold it.

The hot path of the service: one statement checks, locks and stores the message, the buffer
write follows, then the commit (service.infra.database has the per-dialect details and
docs/benchmarks.md what each step costs).
"""

import logging
from dataclasses import dataclass

from service.domain import clock
from service.domain.clock import to_datetime
from service.domain.rules import (
    INBOUND,
    check_can_receive,
    check_not_held,
    duplicate,
    flush_due_us,
    message_type,
)
from service.infra.database import message_transaction
from service.infra.notices import notice
from service.pipeline import groups
from service.pipeline.holds import hold_message

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What an accepted NEW_MESSAGE became."""

    status: str  # "accepted" or "held"
    message_id: str
    conversation_id: str
    reply_due_at: object = None  # aware datetime: the reply's earliest time, if none follows


def accept_message(message_id, conversation_id, content, timestamp, direction):
    """Store a message and add it to its conversation's open group, or hold it.

    `message_id`, `conversation_id`: UUIDs; `timestamp`: aware datetime (the sender's);
    `direction`: RECEIVED or SENT. Returns an Outcome. Raises Rejected (400: closed
    conversation, duplicate or expired id), or the database's or Redis's error (503) with
    nothing stored.
    """
    kind = message_type(direction)
    with message_transaction() as transaction:
        # Arrival is read once a connection is in hand, so the time between the stamp and
        # the buffer entry is one statement and its lock wait, not a wait for the pool.
        now = clock.now_us()
        row = transaction.store(
            id=message_id,
            conversation_id=conversation_id,
            type=kind,
            content=content,
            timestamp=timestamp,
            received_at=to_datetime(now),
            generated=False,
        )
        if row is not None:
            return _accept(transaction, row, message_id, conversation_id, kind, now)
    hold_message(message_id, conversation_id, content, timestamp, direction)
    return Outcome("held", str(message_id), str(conversation_id))


def _accept(transaction, row, message_id, conversation_id, kind, now):
    status, held_status, stored = row
    check_can_receive(status)
    check_not_held(held_status)
    if not stored:
        raise duplicate()
    if kind != INBOUND:
        transaction.commit()
        return Outcome("accepted", str(message_id), str(conversation_id))
    due = flush_due_us(now, groups.quiet_us())
    announce = notice(
        "message.accepted",
        conversation_id=conversation_id,
        message_id=message_id,
        reply_due_at=to_datetime(due),
    )
    # A Redis failure here leaves the row uncommitted: it is rolled back (503). The flush a
    # new group needs is scheduled in the same round trip: were the commit to fail, it finds
    # nothing to answer.
    added = groups.add_to_group(
        conversation_id, [(message_id, now)], now, notice=announce, schedule=True
    )
    try:
        transaction.commit()
    except BaseException:
        _withdraw(conversation_id, message_id)
        raise
    groups.arm(conversation_id, added)
    return Outcome("accepted", str(message_id), str(conversation_id), to_datetime(due))


def _withdraw(conversation_id, message_id):
    """Take a buffer entry back after a failed commit; the commit's error is what to report."""
    try:
        groups.reply_buffer().withdraw(conversation_id, message_id)
    except Exception as exc:  # the entry expires; its flush finds nothing unanswered
        log.warning("buffer_withdraw_failed", extra={"reason": str(exc)})
