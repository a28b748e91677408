"""Messages that arrive before their conversation: hold, join, expire and prune them.

The contract (../shared/SPEC.md, "Out of order"): a NEW_MESSAGE may arrive up to 6 s (the
hold window, arrival clock) before its NEW_CONVERSATION. It is held; if the conversation is
created in time, held messages join it in arrival order, else they are dropped, and the drop
is recorded (log, metric and a row an operator can list).
"""

import logging

from sqlalchemy import delete, insert, select

from service.domain import clock
from service.domain.clock import to_datetime, to_us
from service.domain.rules import (
    EXPIRED,
    HELD,
    INBOUND,
    OPEN,
    duplicate,
    expired,
    message_type,
    within_hold,
)
from service.extensions import db, redis_client
from service.infra import metrics
from service.infra.database import commit_or_rollback, insert_or_reject
from service.infra.models import Conversation, HeldMessage, Message
from service.infra.notices import publish
from service.pipeline.groups import add_to_group, arm, hold_us

log = logging.getLogger(__name__)


def hold_message(message_id, conversation_id, content, timestamp, direction):
    """Keep a message whose conversation is not known yet, for the hold window.

    Returns the moment (aware datetime) its hold ends. Raises Rejected (duplicate_message,
    message_expired) for an id held, stored or dropped before.
    """
    now = clock.now_us()
    held = db.session.get(HeldMessage, message_id)
    if held is not None:
        if held.status == EXPIRED or not within_hold(to_us(held.received_at), now, hold_us()):
            raise expired()
        raise duplicate(held=True)
    if db.session.get(Message, message_id) is not None:
        raise duplicate()
    insert_or_reject(
        insert(HeldMessage).values(
            id=message_id,
            conversation_id=conversation_id,
            type=message_type(direction),
            content=content,
            timestamp=timestamp,
            received_at=to_datetime(now),
            status=HELD,
        ),
        duplicate(held=True),
    )
    commit_or_rollback()
    metrics.count(redis_client.client, "hold_message")
    ids = {"conversation_id": str(conversation_id), "message_id": str(message_id)}
    log.info("hold_message", extra=ids)
    expires = to_datetime(now + hold_us())
    publish(redis_client.client, "message.held", **ids, expires_at=expires)
    return expires


def join_held(conversation_id, created_us, now):
    """Move held messages that arrived within the hold window of `created_us` into the
    conversation (not committed); expire the others. Returns (the joined HeldMessage rows,
    how many were expired).

    The caller holds the conversation's row lock, so a close cannot slip in between.
    """
    held = (
        db.session.execute(
            select(HeldMessage)
            .where(HeldMessage.conversation_id == conversation_id, HeldMessage.status == HELD)
            .order_by(HeldMessage.received_at, HeldMessage.id)
            .with_for_update()
        )
        .scalars()
        .all()
    )
    joined = []
    expired_count = 0
    for message in held:
        if within_hold(to_us(message.received_at), created_us, hold_us()):
            joined.append(message)
        else:
            _expire(message, now)
            expired_count += 1
    if joined:
        db.session.execute(
            insert(Message),
            [
                {
                    "id": m.id,
                    "conversation_id": conversation_id,
                    "type": m.type,
                    "content": m.content,
                    "timestamp": m.timestamp,
                    "received_at": m.received_at,
                }
                for m in joined
            ],
        )
        db.session.execute(delete(HeldMessage).where(HeldMessage.id.in_([m.id for m in joined])))
    return joined, expired_count


def buffer_joined(conversation_id, joined):
    """Add the joined inbound messages to the open group, at their own arrival times.

    Returns a buffer.Added to `arm` after the commit, or None when nothing was added.
    """
    arrivals = [(m.id, to_us(m.received_at)) for m in joined if m.type == INBOUND]
    return add_to_group(conversation_id, arrivals) if arrivals else None


def after_joined(conversation_id, joined, added):
    """After the commit: count and log the joins, and arm the group's flush."""
    for message in joined:
        metrics.count(redis_client.client, "join_held")
        log.info(
            "join_held",
            extra={"conversation_id": str(conversation_id), "message_id": str(message.id)},
        )
    if added is not None:
        arm(conversation_id, added)


def _expire(held, now):
    held.status = EXPIRED
    held.expired_at = to_datetime(now)
    metrics.count(redis_client.client, "expire_held")
    log.warning(
        "expire_held",
        extra={"conversation_id": str(held.conversation_id), "message_id": str(held.id)},
    )


def expire_held():
    """Join held messages whose conversation appeared in time; expire the rest.

    Runs every second from the scheduler. Returns how many messages were expired.
    """
    now = clock.now_us()
    waiting = (
        db.session.execute(
            select(HeldMessage.conversation_id).where(HeldMessage.status == HELD).distinct()
        )
        .scalars()
        .all()
    )
    dropped = 0
    for conversation_id in waiting:
        # Locked like a close does, so a close cannot slip in between the check and the join.
        conversation = db.session.execute(
            select(Conversation.status, Conversation.created_at)
            .where(Conversation.id == conversation_id)
            .with_for_update()
        ).one_or_none()
        if conversation is not None and conversation.status == OPEN:
            joined, expired_count = join_held(
                conversation_id, created_us=to_us(conversation.created_at), now=now
            )
            added = buffer_joined(conversation_id, joined)
            commit_or_rollback()
            after_joined(conversation_id, joined, added)
            dropped += expired_count
            continue
        stale = (
            db.session.execute(
                select(HeldMessage)
                .where(
                    HeldMessage.conversation_id == conversation_id,
                    HeldMessage.status == HELD,
                    # A closed conversation takes nothing more: its held messages are dropped.
                    HeldMessage.received_at
                    < to_datetime(now - hold_us() if conversation is None else now + 1),
                )
                .with_for_update(skip_locked=True)
            )
            .scalars()
            .all()
        )
        for held in stale:
            _expire(held, now)
            publish(
                redis_client.client,
                "message.expired",
                conversation_id=conversation_id,
                message_id=held.id,
            )
        dropped += len(stale)
        commit_or_rollback()
    return dropped


def prune_held(age_us):
    """Delete the records of held messages that expired more than `age_us` (microseconds) ago.

    Until then a redelivery of such a message gets 400 message_expired; afterwards its id is
    new again. Returns how many records were deleted.
    """
    cutoff = to_datetime(clock.now_us() - age_us)
    deleted = db.session.execute(
        delete(HeldMessage).where(HeldMessage.status == EXPIRED, HeldMessage.expired_at < cutoff)
    ).rowcount
    commit_or_rollback()
    log.info("prune_held", extra={"deleted": deleted})
    return deleted
