"""Use cases: each webhook event and each reply-pipeline step, one transaction apiece.

Order of writes for an accepted message: the database row is written (not committed), then
the Redis buffer, then the commit. A Redis failure therefore rolls the row back (503, nothing
changed); a failed commit takes the buffer entry back. The database is the record of which
messages were answered; the buffer only times the groups and can be rebuilt from it.
"""

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import redis.exceptions
from sqlalchemy import (
    Boolean,
    String,
    Text,
    Uuid,
    bindparam,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError

from flask import current_app

from service import clock, metrics
from service.buffer import ReplyBuffer
from service.clock import seconds_us, to_datetime, to_us
from service.extensions import autocommit_engine, db, redis_client
from service.live import notice, publish
from service.models import Conversation, HeldMessage, Message, UTCDateTime
from service.rules import (
    CLOSED,
    EXPIRED,
    HELD,
    INBOUND,
    OPEN,
    Rejected,
    check_can_close,
    check_can_receive,
    duplicate,
    expired,
    flush_due_us,
    message_type,
    reply_content,
    reply_id,
    within_hold,
)
from service.sql import POSTGRESQL, Statement

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What an accepted NEW_MESSAGE became."""

    status: str  # "accepted" or "held"
    message_id: str
    conversation_id: str
    reply_due_at: object = None


def reply_buffer():
    """The app's reply buffer."""
    ext = current_app.extensions
    if "reply_buffer" not in ext:
        ttl_ms = (current_app.config["QUIET_SECONDS"] + 60) * 1000
        ext["reply_buffer"] = ReplyBuffer(redis_client.client, key_ttl_ms=ttl_ms)
    return ext["reply_buffer"]


def quiet_us():
    return seconds_us(current_app.config["QUIET_SECONDS"])


def hold_us():
    return seconds_us(current_app.config["HOLD_SECONDS"])


def _commit_or_rollback(on_failure=None):
    try:
        db.session.commit()
    except BaseException:
        db.session.rollback()
        if on_failure is not None:
            on_failure()
        raise


def _insert_or_reject(statement, rejection):
    """Run an INSERT; a unique violation (a concurrent duplicate) becomes `rejection`."""
    try:
        db.session.execute(statement)
    except IntegrityError:
        db.session.rollback()
        raise rejection from None


def _lock_conversation(conversation_id):
    """The conversation's status, with its row locked until the commit (None if unknown)."""
    return LOCK_CONVERSATION.execute(
        db.session.connection(), conversation_id=conversation_id
    ).scalar_one_or_none()


def create_conversation(conversation_id):
    """NEW_CONVERSATION: open it and let held messages join it."""
    now = clock.now_us()
    moment = to_datetime(now)
    _insert_or_reject(
        insert(Conversation).values(
            id=conversation_id, status=OPEN, created_at=moment, updated_at=moment
        ),
        Rejected("conversation_exists", "A conversation with this id already exists."),
    )
    joined = _adopt_held(conversation_id, created_us=now, now=now)
    added = _buffer_joined(conversation_id, joined)
    _commit_or_rollback()
    log.info("conversation_created", extra={"conversation_id": str(conversation_id)})
    publish(redis_client.client, "conversation.created", conversation_id=conversation_id, at=moment)
    _after_joined(conversation_id, joined, added)
    return db.session.get(Conversation, conversation_id)


def _adopt_held(conversation_id, created_us, now):
    """Move held messages that arrived within the hold window into the conversation."""
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
    for message in held:
        received = to_us(message.received_at)
        if within_hold(received, created_us, hold_us()):
            joined.append(message)
        else:
            _expire(message, now)
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
    return joined


def _buffer_joined(conversation_id, joined):
    arrivals = [(m.id, to_us(m.received_at)) for m in joined if m.type == INBOUND]
    return _add_to_group(conversation_id, arrivals) if arrivals else None


def _add_to_group(conversation_id, arrivals, notice=None):
    """Buffer arrivals, arming a flush with a fresh job id if none is pending."""
    job_id = flush_job_id(conversation_id)
    return reply_buffer().add(conversation_id, arrivals, job_id, notice=notice)


def _arm(conversation_id, added):
    """After the commit: schedule the flush this add armed, if it armed one.

    A later message of the same group does not move the pending flush: when that flush
    finds the group still active, it re-arms itself for the group's new end. That costs
    one Redis decision per extension in a worker instead of a round trip per message here.
    """
    if added.must_schedule:
        schedule_flush(conversation_id, flush_due_us(added.newest_us, quiet_us()), added.job)


def _after_joined(conversation_id, joined, added):
    for message in joined:
        metrics.count(redis_client.client, "joined")
        log.info(
            "held_message_joined",
            extra={"conversation_id": str(conversation_id), "message_id": str(message.id)},
        )
    if added is not None:
        _arm(conversation_id, added)


def _expire(held, now):
    held.status = EXPIRED
    held.expired_at = to_datetime(now)
    metrics.count(redis_client.client, "expired")
    log.warning(
        "held_message_expired",
        extra={"conversation_id": str(held.conversation_id), "message_id": str(held.id)},
    )


# Statements of the hot paths, compiled once per dialect (service.sql): they run on every
# message and every flush, and SQLAlchemy's per-call expression work costs more CPU than the
# database spends on them (see docs/benchmarks.md).
MESSAGE_COLUMNS = "id, conversation_id, type, content, timestamp, received_at, generated"
MESSAGE_TYPES = {
    "id": Uuid,
    "conversation_id": Uuid,
    "type": String,
    "content": Text,
    "timestamp": UTCDateTime,
    "received_at": UTCDateTime,
    "generated": Boolean,
}
INSERT_MESSAGE = (
    f"INSERT INTO messages ({MESSAGE_COLUMNS})"
    " VALUES (:id, :conversation_id, :type, :content, :timestamp, :received_at, :generated)"
)
# A reply runs under the conversation's row lock, so its id cannot already exist.
STORE_REPLY = Statement(INSERT_MESSAGE, **MESSAGE_TYPES)
# PostgreSQL: a message is checked and stored by one prepared statement.
# The share lock on the conversation makes a concurrent close (or flush) wait for this
# message's commit, so the close answers it instead of leaving it alone. The INSERT happens
# only into an open conversation and for an id never held; a duplicate id stores nothing
# (ON CONFLICT), so the count of stored rows tells it apart without an exception.
ACCEPT_MESSAGE = Statement(
    "WITH conversation AS ("
    "  SELECT status FROM conversations WHERE id = :conversation_id FOR SHARE"
    "), held AS ("
    "  SELECT status FROM held_messages WHERE id = :id"
    "), stored AS ("
    f"  INSERT INTO messages ({MESSAGE_COLUMNS})"
    "   SELECT :id, :conversation_id, :type, :content, :timestamp, :received_at, :generated"
    f"  FROM conversation WHERE status = '{OPEN}' AND NOT EXISTS (SELECT 1 FROM held)"
    "   ON CONFLICT (id) DO NOTHING RETURNING 1"
    ")"
    " SELECT conversation.status, (SELECT status FROM held), (SELECT count(*) FROM stored)"
    " FROM conversation",
    name="accept_message",
    **MESSAGE_TYPES,
)
# SQLite has no INSERT inside WITH: the same check, then the INSERT, in one transaction
# (serialised whole by BEGIN IMMEDIATE, so nothing slips in between).
ACCEPT_CHECK = Statement(
    "SELECT c.status, (SELECT h.status FROM held_messages h WHERE h.id = :message_id)"
    " FROM conversations c WHERE c.id = :conversation_id",
    message_id=Uuid,
    conversation_id=Uuid,
)
STORE_MESSAGE = Statement(INSERT_MESSAGE + " ON CONFLICT (id) DO NOTHING", **MESSAGE_TYPES)
LOCK_CONVERSATION = Statement(
    "SELECT status FROM conversations WHERE id = :conversation_id",
    lock="FOR UPDATE",
    conversation_id=Uuid,
)
SELECT_UNANSWERED = (
    text(
        "SELECT id FROM messages WHERE conversation_id = :conversation_id AND type = 'INBOUND'"
        " AND reply_id IS NULL AND received_at <= :upto ORDER BY received_at, id"
    )
    .bindparams(bindparam("conversation_id", type_=Uuid), bindparam("upto", type_=UTCDateTime))
    .columns(id=Uuid)
)
LINK_REPLY = text("UPDATE messages SET reply_id = :reply WHERE id IN :ids").bindparams(
    bindparam("reply", type_=Uuid), bindparam("ids", expanding=True, type_=Uuid)
)
TOUCH_CONVERSATION = text(
    "UPDATE conversations SET updated_at = :at WHERE id = :conversation_id"
).bindparams(bindparam("at", type_=UTCDateTime), bindparam("conversation_id", type_=Uuid))
# Far enough ahead that "every unanswered message" needs no second statement.
END_OF_TIME = datetime(9999, 12, 31, tzinfo=UTC)


def accept_message(message_id, conversation_id, content, timestamp, direction):
    """NEW_MESSAGE: store it and add it to its conversation's group, or hold it."""
    kind = message_type(direction)
    # The hot path: one Connection and prepared statements, no Session (see service.sql).
    # Leaving this block without a commit rolls the transaction back (service.extensions).
    with autocommit_engine().connect() as connection:
        if connection.dialect.name != POSTGRESQL:
            connection.begin()  # SQLite: BEGIN IMMEDIATE waits for the write lock here
        # Arrival is read once a connection is in hand, so the time between the stamp and
        # the buffer entry is one statement and its lock wait, not a wait for the pool.
        now = clock.now_us()
        row = _store_message(
            connection,
            id=message_id,
            conversation_id=conversation_id,
            type=kind,
            content=content,
            timestamp=timestamp,
            received_at=to_datetime(now),
            generated=False,
        )
        if row is not None:
            return _accept(connection, row, message_id, conversation_id, kind, now)
    return _hold(message_id, conversation_id, content, timestamp, direction)


def _store_message(connection, **message):
    """Store a message, not committed yet, if its conversation is open and its id is new.

    Returns (conversation status, status of a held message with this id, rows stored), or
    None when the conversation is unknown.
    """
    if connection.dialect.name == POSTGRESQL:
        # On an autocommit connection: BEGIN travels with the statement, one round trip.
        return ACCEPT_MESSAGE.execute(connection, begin=True, **message).first()
    row = ACCEPT_CHECK.execute(
        connection, message_id=message["id"], conversation_id=message["conversation_id"]
    ).first()
    if row is None:
        return None
    if row[0] != OPEN or row[1] is not None:
        return row[0], row[1], 0
    return row[0], row[1], STORE_MESSAGE.execute(connection, **message).rowcount


def _commit(connection):
    if connection.dialect.name == POSTGRESQL:
        connection.exec_driver_sql("COMMIT")  # the BEGIN was ours, so is the COMMIT
    else:
        connection.commit()


def _accept(connection, row, message_id, conversation_id, kind, now):
    status, held_status, stored = row
    check_can_receive(status)
    check_not_held(held_status)
    if not stored:
        raise duplicate()
    if kind != INBOUND:
        _commit(connection)
        return Outcome("accepted", str(message_id), str(conversation_id))
    due = flush_due_us(now, quiet_us())
    announce = notice(
        "message.accepted",
        conversation_id=conversation_id,
        message_id=message_id,
        reply_due_at=to_datetime(due),
    )
    # A Redis failure here leaves the row uncommitted: it is rolled back (503).
    added = _add_to_group(conversation_id, [(message_id, now)], notice=announce)
    try:
        _commit(connection)
    except BaseException:
        _withdraw(conversation_id, message_id)
        raise
    _arm(conversation_id, added)
    return Outcome("accepted", str(message_id), str(conversation_id), to_datetime(due))


def _withdraw(conversation_id, message_id):
    """Take a buffer entry back after a failed commit; the commit's error is what to report."""
    try:
        reply_buffer().withdraw(conversation_id, message_id)
    except Exception as exc:  # the entry expires; its flush finds nothing unanswered
        log.warning("buffer_withdraw_failed", extra={"reason": str(exc)})


def check_not_held(held_status):
    """A message id held or dropped before cannot come in again."""
    if held_status == EXPIRED:
        raise expired()
    if held_status is not None:
        raise duplicate(held=True)


def _hold(message_id, conversation_id, content, timestamp, direction):
    """Keep a message whose conversation is not known yet, for the hold window."""
    now = clock.now_us()
    held = db.session.get(HeldMessage, message_id)
    if held is not None:
        if held.status == EXPIRED or not within_hold(to_us(held.received_at), now, hold_us()):
            raise expired()
        raise duplicate(held=True)
    if db.session.get(Message, message_id) is not None:
        raise duplicate()
    _insert_or_reject(
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
    _commit_or_rollback()
    metrics.count(redis_client.client, "held")
    log.info(
        "message_held",
        extra={"conversation_id": str(conversation_id), "message_id": str(message_id)},
    )
    expires = to_datetime(now + hold_us())
    publish(
        redis_client.client,
        "message.held",
        conversation_id=conversation_id,
        message_id=message_id,
        expires_at=expires,
    )
    return Outcome("held", str(message_id), str(conversation_id))


def close_conversation(conversation_id):
    """CLOSE_CONVERSATION: answer the open group now, then close."""
    now = clock.now_us()
    check_can_close(_lock_conversation(conversation_id))
    answered = _answer_group(conversation_id, now)
    db.session.execute(
        update(Conversation)
        .where(Conversation.id == conversation_id)
        .values(status=CLOSED, updated_at=to_datetime(now))
    )
    _commit_or_rollback()
    try:
        reply_buffer().discard(conversation_id)
    except Exception as exc:  # the buffer expires on its own; the database is closed
        log.warning("buffer_discard_failed", extra={"reason": str(exc)})
    if answered:
        _reply_created(conversation_id, answered, "close", None, now)
    log.info("conversation_closed", extra={"conversation_id": str(conversation_id)})
    publish(
        redis_client.client,
        "conversation.closed",
        conversation_id=conversation_id,
        at=to_datetime(now),
    )
    return db.session.get(Conversation, conversation_id)


def _answer_group(conversation_id, now, upto_us=None):
    """Write the one reply for the unanswered inbound messages (up to an arrival time).

    Returns (reply_id, message_ids), or None when nothing was waiting. Called with the
    conversation row locked, so two flushes of one group answer it once.
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
        type="OUTBOUND",
        content=reply_content(ids),
        timestamp=moment,
        received_at=moment,
        generated=True,
    )
    db.session.execute(LINK_REPLY, {"reply": reply, "ids": ids})
    db.session.execute(TOUCH_CONVERSATION, {"at": moment, "conversation_id": conversation_id})
    return reply, ids


def _reply_created(conversation_id, answered, trigger, newest_us, now, counts=()):
    """Log, count and announce a reply, in one Redis round trip."""
    reply, ids = answered
    extra = {
        "conversation_id": str(conversation_id),
        "reply_id": str(reply),
        "message_ids": [str(i) for i in ids],
        "trigger": trigger,
    }
    lateness = None
    if newest_us is not None:
        lateness = (now - flush_due_us(newest_us, quiet_us())) / 1_000_000
        extra["lateness_s"] = round(lateness, 4)
    log.info("reply_created", extra=extra)
    announce = notice(
        "reply.created",
        conversation_id=conversation_id,
        message_id=reply,
        message_ids=list(ids),
        at=to_datetime(now),
    )
    metrics.record(
        redis_client.client, [*counts, f"replies_{trigger}"], lateness=lateness, notice=announce
    )


def flush_job_id(conversation_id):
    from service.queueing import flush_entry

    return flush_entry(conversation_id)


def schedule_flush(conversation_id, due_us, job_id=None):
    """Arrange for the conversation's group to be looked at when it may be quiet.

    Called after the commit: if Redis fails now, the message is already safe in the
    database and `reconcile_groups` will arm its group, so the caller is not failed.
    """
    from service import queueing

    try:
        queueing.schedule_flush(conversation_id, due_us, job_id or flush_job_id(conversation_id))
    except redis.exceptions.RedisError as exc:
        log.error(
            "flush_group_schedule_failed",
            extra={"conversation_id": str(conversation_id), "reason": str(exc)},
        )


def flush(conversation_id):
    """Answer the conversation's group if it has been quiet long enough, else re-arm."""
    conversation_id = uuid.UUID(str(conversation_id))  # jobs carry it as JSON text
    now = clock.now_us()
    buffer = reply_buffer()
    next_job = flush_job_id(conversation_id)
    decision = buffer.decide(conversation_id, now, quiet_us(), next_job)
    counted = f"flush_{decision.action}"
    if decision.action != "ready":
        metrics.count(redis_client.client, counted)
    if decision.action == "empty":
        return "empty"
    if decision.action == "wait":
        schedule_flush(conversation_id, decision.at_us, next_job)
        return "wait"
    status = _lock_conversation(conversation_id)
    answered = (
        _answer_group(conversation_id, now, upto_us=decision.at_us) if status == OPEN else None
    )
    _commit_or_rollback()
    remaining = buffer.ack(conversation_id, decision.at_us, next_job)
    if answered:
        _reply_created(conversation_id, answered, "quiet", decision.at_us, now, [counted])
    else:
        metrics.count(redis_client.client, counted)
    if remaining is not None:
        # Messages came in while this group was being answered: look again at once, and
        # the decision will wait for their own quiet window.
        schedule_flush(conversation_id, now, next_job)
    return "answered" if answered else "nothing"


# Conversations re-armed per reconcile run at most; a longer backlog drains over later runs.
RECONCILE_BATCH = 1000


def reconcile():
    """Re-arm groups the database says are unanswered past their due time.

    Covers Redis losing its data, a worker killed mid-flush and a lost scheduled job.
    Returns the conversation ids re-armed.
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
        _add_to_group(conversation_id, pairs)
        metrics.count(redis_client.client, "reconciled")
        log.warning("reconcile_groups", extra={"conversation_id": str(conversation_id)})
    # Whatever was armed may have died with a worker: look now, with fresh jobs, in batches.
    from service import queueing

    queueing.flush_now([str(c) for c in arrivals])
    return list(arrivals)


def prune_expired_holds(age_us):
    """Delete the records of held messages that expired more than `age_us` ago.

    Until then a redelivery of such a message gets 400 message_expired; afterwards its id is
    new again. Returns how many records were deleted.
    """
    cutoff = to_datetime(clock.now_us() - age_us)
    deleted = db.session.execute(
        delete(HeldMessage).where(HeldMessage.status == EXPIRED, HeldMessage.expired_at < cutoff)
    ).rowcount
    _commit_or_rollback()
    log.info("expired_holds_pruned", extra={"deleted": deleted})
    return deleted


def expire_held():
    """Join held messages whose conversation appeared in time; expire the rest."""
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
            joined = _adopt_held(
                conversation_id, created_us=to_us(conversation.created_at), now=now
            )
            added = _buffer_joined(conversation_id, joined)
            _commit_or_rollback()
            _after_joined(conversation_id, joined, added)
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
        _commit_or_rollback()
    return dropped
