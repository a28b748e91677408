"""Answering groups: flush_group when a group may be quiet, reconcile_groups to rebuild the
buffer from the database.

Exactly one reply per group: a reply is written under the conversation's row lock, only for
messages not answered yet, with an id derived from the group's first message.
"""

import logging
import uuid

from sqlalchemy import func, select

from flask import current_app

from service.domain import clock
from service.domain.clock import seconds_us, to_datetime, to_us
from service.domain.rules import INBOUND, OPEN, OUTBOUND, flush_due_us, reply_content, reply_id
from service.extensions import db, redis_client
from service.infra import metrics, queueing
from service.infra.database import commit_or_rollback
from service.infra.models import Conversation, Message
from service.infra.notices import notice
from service.infra.statements import (
    END_OF_TIME,
    LINK_REPLY,
    LOCK_CONVERSATION,
    SELECT_UNANSWERED,
    STORE_REPLY,
    TOUCH_CONVERSATION,
)
from service.pipeline.groups import add_to_group, quiet_us, reply_buffer, schedule_flush

log = logging.getLogger(__name__)

# Conversations re-armed per reconcile_groups run at most; a longer backlog drains over later
# runs.
RECONCILE_BATCH = 1000


def lock_conversation(conversation_id):
    """The conversation's status, with its row locked until the commit (None if unknown)."""
    return LOCK_CONVERSATION.execute(
        db.session.connection(), conversation_id=conversation_id
    ).scalar_one_or_none()


def answer_group(conversation_id, now, upto_us=None):
    """Write the one reply for the unanswered inbound messages (up to an arrival time, in
    microseconds), not committed. Returns (reply_id, message_ids), or None when nothing was
    waiting.

    Called with the conversation row locked, so two flushes of one group answer it once.
    """
    upto = END_OF_TIME if upto_us is None else to_datetime(upto_us)
    ids = (
        db.session.execute(SELECT_UNANSWERED, {"conversation_id": conversation_id, "upto": upto})
        .scalars()
        .all()
    )
    if not ids:
        return None
    reply = reply_id(ids[0])
    moment = to_datetime(now)
    STORE_REPLY.execute(
        db.session.connection(),
        id=reply,
        conversation_id=conversation_id,
        type=OUTBOUND,
        content=reply_content(ids),
        timestamp=moment,
        received_at=moment,
        generated=True,
    )
    db.session.execute(LINK_REPLY, {"reply": reply, "ids": ids})
    db.session.execute(TOUCH_CONVERSATION, {"at": moment, "conversation_id": conversation_id})
    return reply, ids


def reply_fields(answered):
    """The log fields of a reply written by `answer_group`."""
    reply, ids = answered
    return {"reply_id": str(reply), "message_ids": [str(i) for i in ids]}


def announce_reply(conversation_id, answered, trigger, now, lateness=None, counts=()):
    """After the commit: count the reply (and `counts`), observe its lateness (seconds) and
    tell the consoles, in one Redis round trip; never fails the caller."""
    reply, ids = answered
    live = notice(
        "reply.created",
        conversation_id=conversation_id,
        message_id=reply,
        message_ids=list(ids),
        at=to_datetime(now),
    )
    metrics.record(
        redis_client.client, [*counts, f"replies_{trigger}"], lateness=lateness, notice=live
    )


def flush_group(conversation_id):
    """Answer the conversation's group if it has been quiet for the debounce window, else
    re-arm its flush for the group's new end.

    `conversation_id`: UUID or its text (jobs carry JSON). Returns "answered", "nothing"
    (the group was answered already, or the conversation is closed), "wait" or "empty".
    Raises the database's or Redis's error; the group is then answered by a later flush or
    by reconcile_groups.
    """
    conversation_id = uuid.UUID(str(conversation_id))
    now = clock.now_us()
    buffer = reply_buffer()
    next_entry = queueing.flush_entry(conversation_id)
    decision = buffer.decide(conversation_id, now, quiet_us(), next_entry)
    counted = f"flush_group_{decision.action}"
    if decision.action != "ready":
        metrics.count(redis_client.client, counted)
    if decision.action == "empty":
        return "empty"
    if decision.action == "wait":
        schedule_flush(conversation_id, decision.at_us, next_entry)
        return "wait"
    status = lock_conversation(conversation_id)
    answered = (
        answer_group(conversation_id, now, upto_us=decision.at_us) if status == OPEN else None
    )
    commit_or_rollback()
    remaining = buffer.ack(conversation_id, decision.at_us, next_entry)
    if answered:
        lateness = (now - flush_due_us(decision.at_us, quiet_us())) / 1_000_000
        log.info(
            "flush_group",
            extra={
                "conversation_id": str(conversation_id),
                "outcome": "answered",
                **reply_fields(answered),
                "lateness_s": round(lateness, 4),
            },
        )
        announce_reply(conversation_id, answered, "quiet", now, lateness, [counted])
    else:
        metrics.count(redis_client.client, counted)
    if remaining is not None:
        # Messages came in while this group was being answered: look again at once, and
        # the decision will wait for their own quiet window.
        schedule_flush(conversation_id, now, next_entry)
    return "answered" if answered else "nothing"


def reconcile_groups():
    """Re-arm groups the database says are unanswered past their due time.

    Covers Redis losing its data, a worker killed mid-flush and a lost scheduled job.
    Returns the conversation ids (UUIDs) re-armed, at most RECONCILE_BATCH.
    """
    now = clock.now_us()
    grace = seconds_us(current_app.config["RECONCILE_GRACE_SECONDS"])
    cutoff = to_datetime(now - quiet_us() - grace)
    unanswered = (Message.type == INBOUND, Message.reply_id.is_(None))
    # Two simple queries, not one nested one: with stale statistics (a young table) the
    # planner ran the nested form as a loop over every unanswered message, for minutes.
    # Only open conversations count against the batch, so closed ones cannot starve it.
    overdue = (
        db.session.execute(
            select(Message.conversation_id)
            .join(Conversation, Conversation.id == Message.conversation_id)
            .where(Conversation.status == OPEN, *unanswered)
            .group_by(Message.conversation_id)
            .having(func.max(Message.received_at) < cutoff)
            .order_by(func.max(Message.received_at))
            .limit(RECONCILE_BATCH)
        )
        .scalars()
        .all()
    )
    rows = []
    if overdue:
        rows = db.session.execute(
            select(Message.conversation_id, Message.id, Message.received_at)
            .where(Message.conversation_id.in_(overdue), *unanswered)
            .order_by(Message.conversation_id, Message.received_at, Message.id)
        ).all()
    db.session.rollback()
    arrivals = {}
    for conversation_id, message_id, received_at in rows:
        arrivals.setdefault(conversation_id, []).append((message_id, to_us(received_at)))
    for conversation_id, pairs in arrivals.items():
        add_to_group(conversation_id, pairs)
        metrics.count(redis_client.client, "reconcile_groups")
        log.warning("reconcile_groups", extra={"conversation_id": str(conversation_id)})
    # Whatever was armed may have died with a worker: look now, with fresh jobs, in batches.
    queueing.flush_now([str(c) for c in arrivals])
    return list(arrivals)
