"""Reads: conversations, held messages, deliveries and a conversation's live activity for the
API and the CLI, and the readiness checks and gauges of the operators' endpoints.

Reads take no locks and write nothing; each ends its transaction before returning.
"""

import uuid

from sqlalchemy import and_, func, or_, select, text

from flask import current_app

from service.domain import clock
from service.domain.clock import to_datetime, to_us
from service.domain.delivery import PENDING
from service.domain.rules import EXPIRED, HELD, INBOUND, OUTBOUND, closed_groups, flush_due_us
from service.extensions import db, redis_client
from service.infra.models import Conversation, Delivery, Generation, HeldMessage, Message
from service.infra.queueing import (
    SCHEDULER_HEARTBEAT_KEY,
    get_queue,
    get_scheduler,
    live_workers,
)
from service.pipeline.groups import hold_us, quiet_us, reply_buffer
from service.pipeline.replies import overdue_conversations


def older_than(created_column, id_column, after):
    """The keyset condition of a newest-first page: rows strictly after `after`, a
    (created_at datetime, UUID) pair from a cursor, in (created_at, id) descending order."""
    created, ident = after
    return or_(created_column < created, and_(created_column == created, id_column < ident))


def list_conversations(status=None, id_prefix=None, after=None, limit=20):
    """Conversations newest first, with their message count and last arrival.

    `after`: the (created_at, id) of the last row of the previous page. Returns (rows, the
    (created_at, id) to pass as `after` for the next page or None on the last page); each row
    is a dict of the ConversationSummarySchema fields.
    """
    counts = (
        select(
            Message.conversation_id,
            func.count().label("message_count"),
            func.max(Message.received_at).label("last_message_at"),
        )
        .group_by(Message.conversation_id)
        .subquery()
    )
    query = select(Conversation, counts.c.message_count, counts.c.last_message_at).outerjoin(
        counts, counts.c.conversation_id == Conversation.id
    )
    if status:
        query = query.where(Conversation.status == status)
    if id_prefix:
        # Compared without dashes: SQLite stores a UUID as 32 hex digits, PostgreSQL shows 36.
        prefix = id_prefix.lower().replace("%", "").replace("_", "").replace("-", "")
        as_text = func.lower(func.cast(Conversation.id, db.String))
        query = query.where(func.replace(as_text, "-", "").like(f"{prefix}%"))
    if after is not None:
        query = query.where(older_than(Conversation.created_at, Conversation.id, after))
    rows = db.session.execute(
        query.order_by(Conversation.created_at.desc(), Conversation.id.desc()).limit(limit + 1)
    ).all()
    items = [
        {
            "id": c.id,
            "status": c.status,
            "created_at": c.created_at,
            "updated_at": c.updated_at,
            "message_count": count or 0,
            "last_message_at": last,
        }
        for c, count, last in rows[:limit]
    ]
    last = rows[limit - 1][0] if len(rows) > limit else None
    return items, (last.created_at, last.id) if last is not None else None


def get_conversation(conversation_id):
    """A conversation with its messages in the order they were recorded, or None.

    Each message is a dict of the MessageSchema fields. An OUTBOUND message also has
    `delivery` (a dict of the DeliveryStateSchema fields, or None when it has no delivery
    record: stored before delivery was on, or a SENT message) when REPLY_WEBHOOK_URL is set
    or when it has a record; with delivery never configured the messages are exactly SPEC's
    `{id, type, content, timestamp}` (issue 13: unchanged by default).
    """
    conversation = db.session.get(Conversation, conversation_id)
    if conversation is None:
        return None
    messages = db.session.execute(
        select(Message)
        .where(Message.conversation_id == conversation_id)
        .order_by(Message.received_at, Message.id)
    ).scalars()
    deliveries = {
        d.reply_id: d
        for d in db.session.execute(
            select(Delivery).where(Delivery.conversation_id == conversation_id)
        ).scalars()
    }
    delivery_on = bool(current_app.config.get("REPLY_WEBHOOK_URL"))
    rows = []
    for m in messages:
        row = {"id": m.id, "type": m.type, "content": m.content, "timestamp": m.timestamp}
        if m.type == OUTBOUND and (delivery_on or m.id in deliveries):
            found = deliveries.get(m.id)
            row["delivery"] = _delivery_state(found) if found is not None else None
        rows.append(row)
    return {
        "id": conversation.id,
        "status": conversation.status,
        "created_at": conversation.created_at,
        "updated_at": conversation.updated_at,
        "messages": rows,
    }


_STATE_FIELDS = (
    "status",
    "attempts",
    "next_attempt_at",
    "last_attempt_at",
    "last_status",
    "last_error",
    "delivered_at",
)


def _delivery_state(delivery):
    return {name: getattr(delivery, name) for name in _STATE_FIELDS}


def _delivery_row(delivery):
    return {
        "reply_id": delivery.reply_id,
        "conversation_id": delivery.conversation_id,
        "created_at": delivery.created_at,
        **_delivery_state(delivery),
    }


def list_deliveries(status=None, conversation_id=None, limit=20, after=None):
    """Deliveries newest first (by the reply's created_at, then reply id).

    `status`: one of service.domain.delivery.STATUSES or None for all; `after`: the
    (created_at, reply_id) of the last row of the previous page. Returns (rows, the
    (created_at, reply_id) to pass as `after` for the next page, or None on the last page);
    each row is a dict of the DeliverySchema fields.
    """
    query = select(Delivery)
    if status:
        query = query.where(Delivery.status == status)
    if conversation_id:
        query = query.where(Delivery.conversation_id == conversation_id)
    if after is not None:
        query = query.where(older_than(Delivery.created_at, Delivery.reply_id, after))
    found = db.session.execute(
        query.order_by(Delivery.created_at.desc(), Delivery.reply_id.desc()).limit(limit + 1)
    ).scalars()
    rows = [_delivery_row(d) for d in found]
    db.session.rollback()
    return _page(rows, limit)


def _page(rows, limit):
    """Rows read with `limit + 1` as (the page, the (created_at, reply_id) after which the next
    page starts, or None on the last page)."""
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], (last["created_at"], last["reply_id"])


def get_delivery(reply_id):
    """The delivery of one reply as a dict of the DeliverySchema fields, or None."""
    found = db.session.get(Delivery, reply_id)
    row = _delivery_row(found) if found is not None else None
    db.session.rollback()
    return row


_GENERATION_FIELDS = (
    "reply_id",
    "conversation_id",
    "status",
    "attempts",
    "created_at",
    "next_attempt_at",
    "last_attempt_at",
    "last_status",
    "last_error",
    "source",
    "stored_at",
)


def list_generations(status=None, conversation_id=None, limit=20, after=None):
    """Closed groups sent (or to send) to REPLY_GENERATOR_URL, newest closure first (then reply
    id). `status`: one of service.domain.generation.STATUSES or None for all; `after`: the
    (created_at, reply_id) of the last row of the previous page. Returns (rows, the
    (created_at, reply_id) to pass as `after` for the next page, or None on the last page);
    each row is a dict of the GenerationSchema fields, `message_ids` (the group's, in arrival
    order) included."""
    query = select(Generation)
    if status:
        query = query.where(Generation.status == status)
    if conversation_id:
        query = query.where(Generation.conversation_id == conversation_id)
    if after is not None:
        query = query.where(older_than(Generation.created_at, Generation.reply_id, after))
    found = db.session.execute(
        query.order_by(Generation.created_at.desc(), Generation.reply_id.desc()).limit(limit + 1)
    ).scalars()
    rows = {g.reply_id: _generation_row(g) for g in found}
    if rows:
        for reply_id, message_id in db.session.execute(
            select(Message.reply_id, Message.id)
            .where(Message.reply_id.in_(list(rows)), Message.type == INBOUND)
            .order_by(Message.received_at, Message.id)
        ):
            rows[reply_id]["message_ids"].append(message_id)
    db.session.rollback()
    return _page(list(rows.values()), limit)


def _generation_row(found):
    return {**{name: getattr(found, name) for name in _GENERATION_FIELDS}, "message_ids": []}


def get_generation(reply_id):
    """The generation of one reply id as a dict (see list_generations), or None."""
    found = db.session.get(Generation, reply_id)
    row = None
    if found is not None:
        row = _generation_row(found)
        row["message_ids"] = list(
            db.session.execute(
                select(Message.id)
                .where(Message.reply_id == reply_id, Message.type == INBOUND)
                .order_by(Message.received_at, Message.id)
            ).scalars()
        )
    db.session.rollback()
    return row


def _held_row(held, hold):
    return {
        "id": held.id,
        "conversation_id": held.conversation_id,
        "content": held.content,
        "received_at": held.received_at,
        "expires_at": to_datetime(to_us(held.received_at) + hold),
        "status": held.status,
        "expired_at": held.expired_at,
    }


def list_held(status=None, conversation_id=None, limit=100):
    """Held and expired messages, newest first, as dicts of the HeldMessageSchema fields."""
    query = select(HeldMessage)
    if status:
        query = query.where(HeldMessage.status == status)
    if conversation_id:
        query = query.where(HeldMessage.conversation_id == conversation_id)
    rows = db.session.execute(
        query.order_by(HeldMessage.received_at.desc(), HeldMessage.id).limit(limit)
    ).scalars()
    hold = hold_us()
    return [_held_row(h, hold) for h in rows]


def conversation_activity(conversation_id):
    """The group waiting for its reply (from the buffer, less what the database says is
    answered) and the messages held for this id, as a dict of the ActivitySchema fields."""
    pending = reply_buffer().pending(conversation_id)
    answered = set()
    if pending:
        answered = set(
            db.session.execute(
                select(Message.id).where(
                    Message.id.in_([uuid.UUID(m) for m, _ in pending]),
                    Message.reply_id.is_not(None),
                )
            ).scalars()
        )
    waiting = [(m, at) for m, at in pending if uuid.UUID(m) not in answered]
    group = None
    if waiting:
        newest = max(at for _, at in waiting)
        group = {
            "message_ids": [m for m, _ in waiting],
            "last_arrival_at": to_datetime(newest),
            "reply_due_at": to_datetime(newest + quiet_us()),
        }
    return {
        "conversation_id": conversation_id,
        "group": group,
        "held": list_held(conversation_id=conversation_id),
    }


def _check(probe):
    try:
        return probe()
    except Exception as exc:  # any failure of a dependency means not ready
        return False, f"{type(exc).__name__}: {exc}"


def _database():
    db.session.execute(text("SELECT 1"))
    return True, "reachable"


def _redis():
    redis_client.client.ping()
    return True, "reachable"


def _workers():
    count = live_workers()
    return count > 0, f"{count} worker(s) alive"


def _scheduler():
    name = redis_client.client.get(SCHEDULER_HEARTBEAT_KEY)
    return name is not None, "heartbeat seen" if name else "no scheduler heartbeat"


def readiness():
    """Whether webhooks can be taken and answered: {check: {"ok": bool, "detail": str}} for
    database, redis and, when Redis answers, workers and scheduler."""
    probes = {"database": _database, "redis": _redis}
    checks = {}
    for name, probe in probes.items():
        ok, detail = _check(probe)
        checks[name] = {"ok": ok, "detail": detail}
    if checks["redis"]["ok"]:
        for name, probe in (("workers", _workers), ("scheduler", _scheduler)):
            ok, detail = _check(probe)
            checks[name] = {"ok": ok, "detail": detail}
    db.session.rollback()
    return checks


# Conversations read per scrape for the backlog gauges: past it, due_groups is a lower bound
# (and the backlog is far past any SLO anyway).
BACKLOG_LIMIT = 10_000


def backlog(now):
    """(groups due and unanswered, seconds since the oldest of them came due: 0 when none) at
    `now` (us). A group is due once its debounce window has passed (SPEC, "Grouping"). Raises
    the database's error."""
    quiet = quiet_us()
    due = [
        closed_groups(pairs, now, quiet)
        for pairs in overdue_conversations(now, limit=BACKLOG_LIMIT).values()
    ]
    count = sum(len(groups) for groups in due)
    oldest = min((flush_due_us(groups[0][-1][1], quiet) for groups in due), default=now)
    return count, (now - oldest) / 1e6


def gauges():
    """Point-in-time values for /metrics: {name: (help text, value)}."""
    held = dict(
        db.session.execute(
            select(HeldMessage.status, func.count()).group_by(HeldMessage.status)
        ).all()
    )
    open_groups = db.session.execute(
        select(func.count(func.distinct(Message.conversation_id))).where(
            Message.type == INBOUND, Message.reply_id.is_(None)
        )
    ).scalar_one()
    depth, oldest = db.session.execute(
        select(func.count(), func.min(Delivery.created_at)).where(Delivery.status == PENDING)
    ).one()
    waiting, oldest_group = db.session.execute(
        select(func.count(), func.min(Generation.created_at)).where(Generation.status == PENDING)
    ).one()
    db.session.rollback()
    now = clock.now_us()
    due, oldest_due = backlog(now)

    def age(moment):
        return max(0.0, (now - to_us(moment)) / 1e6) if moment is not None else 0.0

    return {
        "generation_pending": (
            "Closed groups waiting for their reply from REPLY_GENERATOR_URL",
            waiting,
        ),
        "generation_oldest_pending_age_seconds": (
            "Age of the oldest group waiting for the generator (since it closed); 0 when none",
            age(oldest_group),
        ),
        "delivery_outbox_depth": ("Replies waiting for their delivery (pending)", depth),
        "delivery_oldest_pending_age_seconds": (
            "Age of the oldest pending reply (since it was stored); 0 when none is pending",
            age(oldest),
        ),
        "held_messages_waiting": (
            "Messages held for a conversation not created yet",
            held.get(HELD, 0),
        ),
        "held_messages_expired": ("Held messages dropped (kept as records)", held.get(EXPIRED, 0)),
        "open_groups": ("Conversations with inbound messages waiting for their reply", open_groups),
        "due_groups": (
            "Groups whose debounce window has passed and that have no reply yet",
            due,
        ),
        "oldest_due_group_age_seconds": (
            "How long the oldest due group has waited for its reply since it came due; 0 when none",
            oldest_due,
        ),
        "queue_depth": ("Jobs waiting in the RQ queue", get_queue().count),
        "scheduled_jobs": ("Jobs waiting in rq-scheduler", get_scheduler().count()),
    }
