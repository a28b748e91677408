"""Answering groups: flush_group when a group may be quiet, reconcile_groups to rebuild the
buffer from the database.

Exactly one reply per group: a group is closed under the conversation's row lock, only for
messages not answered yet, with a reply id derived from the group's first message. By default
the reply (the brief's template) is written then and there; with REPLY_GENERATOR_URL set the
closure is recorded instead and the team's bot writes the reply later
(service.pipeline.generations).
"""

import logging
import uuid
from dataclasses import dataclass

from sqlalchemy import func, select

from flask import current_app

from service.domain import clock
from service.domain.clock import seconds_us, to_datetime, to_us
from service.domain.rules import (
    INBOUND,
    OPEN,
    OUTBOUND,
    closed_groups,
    flush_due_us,
    reply_content,
    reply_id,
)
from service.extensions import db, redis_client
from service.infra import metrics, queueing
from service.infra.database import commit_or_rollback
from service.infra.models import Conversation, Message
from service.infra.notices import notice
from service.infra.statements import (
    LINK_REPLY,
    LOCK_CONVERSATION,
    SELECT_UNANSWERED,
    STORE_DELIVERY,
    STORE_GENERATION,
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


@dataclass(frozen=True)
class Answer:
    """A reply written for one group: its id, the group's message ids, its newest arrival;
    `generating` when the group was only closed and its reply is the generator's to write."""

    reply_id: uuid.UUID
    message_ids: list
    newest_us: int
    generating: bool = False


def answer_groups(conversation_id, now, final=False):
    """Write one reply per closed group of the unanswered inbound messages, oldest first, not
    committed. Returns the Answers, in group order (empty when nothing was due).

    The groups are cut from the recorded arrival times alone (domain.rules.closed_groups), so
    they are the same whatever the Redis buffer lost. `final` answers the open group too (a
    close). Called with the conversation row locked, so two flushes answer a group once.
    With REPLY_WEBHOOK_URL set, each reply's delivery (the outbox row, pending and due at
    once) is written with it, so neither is ever stored without the other. With
    REPLY_GENERATOR_URL set, no reply is written: each group's messages are linked to its reply
    id and a pending `generations` row records the closure (SPEC: closed exactly once, before
    the generator is called).
    """
    outbox = current_app.config["REPLY_WEBHOOK_URL"] is not None
    generator = current_app.config["REPLY_GENERATOR_URL"] is not None
    rows = db.session.execute(SELECT_UNANSWERED, {"conversation_id": conversation_id}).all()
    arrivals = [(message_id, to_us(received_at)) for message_id, received_at in rows]
    answers = []
    for offset, group in enumerate(closed_groups(arrivals, now, quiet_us(), final)):
        ids = [message_id for message_id, _ in group]
        reply = reply_id(ids[0])
        # Replies written together are a microsecond apart, so they read in group order.
        moment = to_datetime(now + offset)
        if generator:
            STORE_GENERATION.execute(
                db.session.connection(),
                reply_id=reply,
                conversation_id=conversation_id,
                created_at=moment,
            )
            db.session.execute(LINK_REPLY, {"reply": reply, "ids": ids})
            answers.append(Answer(reply, ids, group[-1][1], generating=True))
            continue
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
        if outbox:
            STORE_DELIVERY.execute(
                db.session.connection(),
                reply_id=reply,
                conversation_id=conversation_id,
                created_at=moment,
            )
        answers.append(Answer(reply, ids, group[-1][1]))
    if answers:
        moment = to_datetime(now + len(answers) - 1)
        db.session.execute(TOUCH_CONVERSATION, {"at": moment, "conversation_id": conversation_id})
    return answers


def reply_fields(answer):
    """The log fields of a reply written by `answer_groups`."""
    return {
        "reply_id": str(answer.reply_id),
        "message_ids": [str(i) for i in answer.message_ids],
    }


def announce_reply(conversation_id, answer, trigger, now, lateness=None, counts=()):
    """After the commit: count the group answered (replies_<trigger>, `trigger` "quiet" or
    "close"; None counts nothing) and `counts`, observe its lateness (seconds) and tell the
    consoles, in one Redis round trip; then queue the reply's generation (a group closed for
    the generator) or its delivery (when delivery is on). Never fails the caller."""
    live = notice(
        "group.closed" if answer.generating else "reply.created",
        conversation_id=conversation_id,
        message_id=answer.reply_id,
        message_ids=list(answer.message_ids),
        at=to_datetime(now),
    )
    names = [*counts, f"replies_{trigger}"] if trigger else list(counts)
    metrics.record(redis_client.client, names, lateness=lateness, notice=live)
    if answer.generating:
        queueing.generate_soon()
    elif current_app.config["REPLY_WEBHOOK_URL"] is not None:
        queueing.deliver_soon()


def flush_group(conversation_id):
    """Answer the conversation's closed groups if the oldest buffered one has been quiet for
    the debounce window, else re-arm its flush for the group's new end.

    `conversation_id`: UUID or its text (jobs carry JSON). Returns "answered", "nothing"
    (answered already, or the conversation is closed), "wait" or "empty". Raises the
    database's or Redis's error; the group is then answered by the next message's flush or by
    reconcile_groups.
    """
    conversation_id = uuid.UUID(str(conversation_id))
    buffer = reply_buffer()
    decision = buffer.decide(conversation_id, clock.now_us())
    counted = f"flush_group_{decision.action}"
    if decision.action != "ready":
        metrics.count(redis_client.client, counted)
    if decision.action == "empty":
        return "empty"
    if decision.action == "wait":
        schedule_flush(conversation_id, decision.at_us)
        return "wait"
    status = lock_conversation(conversation_id)
    # Read after the lock: every message stamped before it is committed by now, so the
    # groups below are complete.
    now = clock.now_us()
    answers = answer_groups(conversation_id, now) if status == OPEN else []
    commit_or_rollback()
    newest = max([decision.at_us, *(answer.newest_us for answer in answers)])
    remaining = buffer.ack(conversation_id, newest, now)
    for index, answer in enumerate(answers):
        lateness = (now - flush_due_us(answer.newest_us, quiet_us())) / 1_000_000
        log.info(
            "flush_group",
            extra={
                "conversation_id": str(conversation_id),
                "outcome": "answered",
                **reply_fields(answer),
                "lateness_s": round(lateness, 4),
            },
        )
        counts = [] if index else [counted]
        announce_reply(conversation_id, answer, "quiet", now, lateness, counts)
    if not answers:
        metrics.count(redis_client.client, counted)
    if remaining is not None:
        # Messages came in while this group was being answered: look again at once, and
        # the decision will wait for their own quiet window.
        schedule_flush(conversation_id, now)
    return "answered" if answers else "nothing"


def overdue_conversations(now, overdue_by=0, limit=RECONCILE_BATCH):
    """The open conversations whose oldest unanswered group has been due for at least
    `overdue_by` (us) at `now` (us): {conversation_id: [(message_id, arrival_us), ...]}, every
    unanswered inbound message of each, oldest first; at most `limit` conversations, the
    longest waiting first. Read in its own short transaction (rolled back). Raises the
    database's error."""
    cutoff = to_datetime(now - quiet_us() - overdue_by)
    unanswered = (Message.type == INBOUND, Message.reply_id.is_(None))
    # Two simple queries, not one nested one: with stale statistics (a young table) the
    # planner ran the nested form as a loop over every unanswered message, for minutes.
    # Only open conversations count against the limit, so closed ones cannot starve it.
    candidates = (
        db.session.execute(
            select(Message.conversation_id)
            .join(Conversation, Conversation.id == Message.conversation_id)
            .where(Conversation.status == OPEN, *unanswered)
            .group_by(Message.conversation_id)
            .having(func.min(Message.received_at) < cutoff)
            .order_by(func.min(Message.received_at))
            .limit(limit)
        )
        .scalars()
        .all()
    )
    rows = []
    if candidates:
        rows = db.session.execute(
            select(Message.conversation_id, Message.id, Message.received_at)
            .where(Message.conversation_id.in_(candidates), *unanswered)
            .order_by(Message.conversation_id, Message.received_at, Message.id)
        ).all()
    db.session.rollback()
    arrivals = {}
    for conversation_id, message_id, received_at in rows:
        arrivals.setdefault(conversation_id, []).append((message_id, to_us(received_at)))
    # The oldest messages of a group that is still growing do not make it due.
    overdue = {}
    for conversation_id, pairs in arrivals.items():
        groups = closed_groups(pairs, now, quiet_us())
        if groups and flush_due_us(groups[0][-1][1], quiet_us()) + overdue_by <= now:
            overdue[conversation_id] = pairs
    return overdue


def reconcile_groups():
    """Re-arm conversations whose oldest unanswered group is overdue by the grace period.

    Covers Redis losing its data, a worker killed mid-flush, a flush failed by a database
    outage and a lost scheduled job, including in conversations that keep receiving messages.
    Returns the conversation ids (UUIDs) re-armed, at most RECONCILE_BATCH.
    """
    now = clock.now_us()
    grace = seconds_us(current_app.config["RECONCILE_GRACE_SECONDS"])
    overdue = overdue_conversations(now, overdue_by=grace)
    for conversation_id, pairs in overdue.items():
        add_to_group(conversation_id, pairs, now)
        metrics.count(redis_client.client, "reconcile_groups")
        log.warning("reconcile_groups", extra={"conversation_id": str(conversation_id)})
    # Whatever was armed may have died with a worker: look now, with fresh jobs, in batches.
    queueing.flush_now([str(c) for c in overdue])
    return list(overdue)
