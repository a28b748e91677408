"""Answering groups: flush_group when a group may be quiet (flush_groups for the batch of a
scheduler poll), reconcile_groups to rebuild the buffer from the database.

Exactly one reply per group: a group is closed under the conversation's row lock, only for
messages not answered yet, with a reply id derived from the group's first message. By default
the reply (the brief's template) is written then and there; with REPLY_GENERATOR_URL set the
closure is recorded instead and the team's bot writes the reply later
(service.pipeline.generations).
"""

import collections
import logging
import uuid
from dataclasses import dataclass

import redis.exceptions
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
    LINK_REPLIES,
    LINK_REPLY,
    LOCK_CONVERSATION,
    LOCK_CONVERSATIONS,
    POSTGRESQL,
    SELECT_UNANSWERED,
    SELECT_UNANSWERED_OF,
    STORE_DELIVERIES,
    STORE_DELIVERY,
    STORE_GENERATION,
    STORE_GENERATIONS,
    STORE_REPLIES,
    STORE_REPLY,
    TOUCH_CONVERSATION,
    TOUCH_CONVERSATIONS,
)
from service.pipeline.groups import add_to_group, quiet_us, reply_buffer, schedule_flushes

log = logging.getLogger(__name__)

# How long (ms) a batch of flushes waits for its conversations' row locks before it gives
# them up and flushes them one by one: far above a message's lock hold (milliseconds), far
# below the database read timeout.
BATCH_LOCK_TIMEOUT_MS = 500
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


def due_answers(arrivals, now, final=False):
    """The Answers owed to a conversation's unanswered inbound messages at `now` (us): one
    per closed group, oldest first (empty when nothing is due).

    `arrivals`: (message_id, arrival_us) pairs, oldest first. The groups are cut from the
    recorded arrival times alone (domain.rules.closed_groups), so they are the same whatever
    the Redis buffer lost. `final` answers the open group too (a close).
    """
    generating = current_app.config["REPLY_GENERATOR_URL"] is not None
    answers = []
    for group in closed_groups(arrivals, now, quiet_us(), final):
        ids = [message_id for message_id, _ in group]
        answers.append(Answer(reply_id(ids[0]), ids, group[-1][1], generating))
    return answers


def write_answers(answers, now):
    """Write the Answers of several conversations ({conversation_id: [Answer, ...]}, each
    list in group order), not committed; the conversations' rows must be locked.

    A conversation's replies are stamped `now`, `now` + 1 us, ... (us), so they read in
    group order, and the conversation is touched at its last one. With REPLY_WEBHOOK_URL
    set, each reply's delivery (the outbox row, pending and due at once) is written with it,
    so neither is ever stored without the other. With REPLY_GENERATOR_URL set, no reply is
    written: each group's messages are linked to its reply id and a pending `generations`
    row records the closure (SPEC: closed exactly once, before the generator is called).
    On PostgreSQL each kind of row is written by one statement whatever the count; SQLite
    writes them one by one.
    """
    answers = {c: listed for c, listed in answers.items() if listed}
    if not answers:
        return
    outbox = current_app.config["REPLY_WEBHOOK_URL"] is not None
    connection = db.session.connection()
    if connection.dialect.name != POSTGRESQL:
        _write_each(connection, answers, now, outbox)
        return
    rows = [
        (c, answer, to_datetime(now + offset))
        for c, listed in answers.items()
        for offset, answer in enumerate(listed)
    ]
    reply_ids = [answer.reply_id for _, answer, _ in rows]
    conversation_ids = [c for c, _, _ in rows]
    moments = [moment for _, _, moment in rows]
    if rows[0][1].generating:
        STORE_GENERATIONS.execute(
            connection, reply_ids=reply_ids, conversation_ids=conversation_ids, moments=moments
        )
    else:
        STORE_REPLIES.execute(
            connection,
            ids=reply_ids,
            conversation_ids=conversation_ids,
            contents=[reply_content(answer.message_ids) for _, answer, _ in rows],
            moments=moments,
        )
        if outbox:
            STORE_DELIVERIES.execute(
                connection, reply_ids=reply_ids, conversation_ids=conversation_ids, moments=moments
            )
    LINK_REPLIES.execute(
        connection,
        ids=[message_id for _, answer, _ in rows for message_id in answer.message_ids],
        replies=[answer.reply_id for _, answer, _ in rows for _ in answer.message_ids],
    )
    TOUCH_CONVERSATIONS.execute(
        connection,
        ids=list(answers),
        moments=[to_datetime(now + len(listed) - 1) for listed in answers.values()],
    )


def _write_each(connection, answers, now, outbox):
    """`write_answers` one row at a time (SQLite)."""
    for conversation_id, listed in answers.items():
        for offset, answer in enumerate(listed):
            moment = to_datetime(now + offset)
            if answer.generating:
                STORE_GENERATION.execute(
                    connection,
                    reply_id=answer.reply_id,
                    conversation_id=conversation_id,
                    created_at=moment,
                )
            else:
                STORE_REPLY.execute(
                    connection,
                    id=answer.reply_id,
                    conversation_id=conversation_id,
                    type=OUTBOUND,
                    content=reply_content(answer.message_ids),
                    timestamp=moment,
                    received_at=moment,
                    generated=True,
                )
            db.session.execute(LINK_REPLY, {"reply": answer.reply_id, "ids": answer.message_ids})
            if outbox and not answer.generating:
                STORE_DELIVERY.execute(
                    connection,
                    reply_id=answer.reply_id,
                    conversation_id=conversation_id,
                    created_at=moment,
                )
        moment = to_datetime(now + len(listed) - 1)
        db.session.execute(TOUCH_CONVERSATION, {"at": moment, "conversation_id": conversation_id})


def unanswered(conversation_ids):
    """The unanswered inbound messages of these conversations: {conversation_id:
    [(message_id, arrival_us), ...]}, oldest first, with a key for every id given. One
    statement on PostgreSQL, one a conversation on SQLite."""
    arrivals = {conversation_id: [] for conversation_id in conversation_ids}
    connection = db.session.connection()
    if connection.dialect.name == POSTGRESQL:
        rows = SELECT_UNANSWERED_OF.execute(connection, conversation_ids=list(arrivals))
    else:
        rows = [
            (conversation_id, *row)
            for conversation_id in arrivals
            for row in db.session.execute(SELECT_UNANSWERED, {"conversation_id": conversation_id})
        ]
    for conversation_id, message_id, received_at in rows:
        arrivals[conversation_id].append((message_id, to_us(received_at)))
    return arrivals


def answer_groups(conversation_ids, now, final=False, cutoff=None):
    """Write one reply per closed group of the unanswered inbound messages of these
    conversations (UUIDs, their rows locked, so two flushes answer a group once), oldest
    first, not committed (see `write_answers`). Returns {conversation_id: [Answer, ...]},
    in group order (empty when nothing was due).

    Groups close by `cutoff` (us; `now` when None), replies are stamped from `now` (us):
    only messages stamped by then count, so one stamped later cannot close a group by its gap
    while a message stamped earlier still waits behind the lock. `final` answers every
    message found (a close).
    """
    closing = now if cutoff is None else cutoff
    answers = {}
    for conversation_id, arrivals in unanswered(conversation_ids).items():
        if not final:
            arrivals = [pair for pair in arrivals if pair[1] <= closing]
        answers[conversation_id] = due_answers(arrivals, closing, final)
    write_answers(answers, now)
    return answers


def answer_conversations(conversation_ids, cutoff):
    """Answer the closed groups of several conversations (UUIDs) in one transaction,
    committed: their rows locked in id order (two batches never deadlock), then
    `answer_groups`. Groups close by `cutoff` (us, read before the locks: see flush_group).
    Closed and unknown conversations answer nothing. PostgreSQL only.

    The locks are waited for BATCH_LOCK_TIMEOUT_MS at most: while the batch waits for one
    row it holds the ones before it, and the intake of those conversations waits with it.
    Past that, PostgreSQL gives up and releases them itself (a client-side timeout would
    leave the backend waiting, locks held), and the caller flushes them one by one.

    Returns (now, {conversation_id: [Answer, ...]}), `now` (us) being the replies' stamp.
    Raises the database's error, rolled back.
    """
    try:
        connection = db.session.connection()
        locked = LOCK_CONVERSATIONS.execute(
            connection,
            prelude=f"SET LOCAL lock_timeout = {BATCH_LOCK_TIMEOUT_MS}",
            ids=conversation_ids,
        ).all()
        now = clock.now_us()
        open_ids = [conversation_id for conversation_id, status in locked if status == OPEN]
        answers = answer_groups(open_ids, now, cutoff=cutoff)
    except BaseException:
        db.session.rollback()
        raise
    commit_or_rollback()
    return now, answers


def reply_fields(answer):
    """The log fields of a reply written by `answer_groups` (an Answer)."""
    return {
        "reply_id": str(answer.reply_id),
        "message_ids": [str(i) for i in answer.message_ids],
    }


def reply_notice(conversation_id, answer, now):
    """The live notice (channel, text) of a reply written, or of a group closed for the
    generator, at `now` (us)."""
    return notice(
        "group.closed" if answer.generating else "reply.created",
        conversation_id=conversation_id,
        message_id=answer.reply_id,
        message_ids=list(answer.message_ids),
        at=to_datetime(now),
    )


def announce_reply(conversation_id, answer, trigger, now, lateness=None, counts=()):
    """After the commit: count the group answered (replies_<trigger>, `trigger` "quiet" or
    "close"; None counts nothing) and `counts`, observe its lateness (seconds) and tell the
    consoles, in one Redis round trip; then queue the reply's generation (a group closed for
    the generator) or its delivery (when delivery is on). Never fails the caller."""
    live = reply_notice(conversation_id, answer, now)
    names = [*counts, f"replies_{trigger}"] if trigger else list(counts)
    metrics.record(redis_client.client, names, lateness=lateness, notice=live)
    wake_passes([answer])


def wake_passes(answers):
    """After the commit of these Answers: queue (or wake) one generation pass if any group
    was closed for the generator, one delivery pass if any reply was written and delivery is
    on. Never fails the caller."""
    if any(answer.generating for answer in answers):
        queueing.generate_soon()
    if current_app.config["REPLY_WEBHOOK_URL"] is not None and any(
        not answer.generating for answer in answers
    ):
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
    decision = reply_buffer().decide(conversation_id, clock.now_us())
    if decision.action != "ready":
        metrics.record(redis_client.client, rearm({conversation_id: decision}))
        return decision.action
    # Groups close by a clock read before the lock: a message stamped later may still be
    # waiting for the lock, unseen, and must not find its group answered without it. Every
    # message stamped earlier whose statement reached the row first is committed once the
    # lock is ours. The replies are stamped after the lock, so after every message they
    # answer. (Read after the decision, so every group it found ready closes here too.)
    cutoff = clock.now_us()
    status = lock_conversation(conversation_id)
    now = clock.now_us()
    answers = answer_groups([conversation_id], now, cutoff=cutoff) if status == OPEN else {}
    commit_or_rollback()
    settled = settle({conversation_id: (decision.at_us, answers.get(conversation_id, []))}, now)
    return settled[conversation_id]


def flush_groups(conversation_ids):
    """flush_group for a batch of conversations (ids as text, as jobs carry them), at the
    cost of a few round trips for the whole batch: one Redis pipeline for the decisions, one
    ZADD to re-arm the waiting ones, one transaction answering every ready one (PostgreSQL;
    answer_conversations), one Redis pipeline for the acknowledgements, metrics and notices.

    Returns {conversation_id (as given): outcome}, the outcomes of flush_group or "failed".
    When the batch's transaction fails, each ready conversation is flushed on its own
    instead, so one bad conversation does not hold up the others; the ones that still fail
    are logged (flush_group_failed) and reported "failed", as are the ones answered whose
    acknowledgement Redis failed. On SQLite every conversation is flushed on its own.
    Raises Redis's error of the decisions (nothing was answered; reconcile_groups re-arms
    them).
    """
    if db.session.get_bind().dialect.name != POSTGRESQL:
        return flush_each(list(dict.fromkeys(conversation_ids)))
    given, results = {}, {}
    for text in conversation_ids:
        try:
            given.setdefault(uuid.UUID(str(text)), text)
        except ValueError:
            log.error("flush_group_failed", extra={"conversation_id": text, "reason": "not a UUID"})
            results[text] = "failed"
    decisions = reply_buffer().decide_many(list(given), clock.now_us())
    results.update({given[c]: d.action for c, d in decisions.items() if d.action != "ready"})
    counts = rearm({c: d for c, d in decisions.items() if d.action != "ready"})
    ready = {c: d.at_us for c, d in decisions.items() if d.action == "ready"}
    if not ready:
        metrics.record(redis_client.client, counts)
        return results
    try:
        now, answers = answer_conversations(list(ready), clock.now_us())
    except Exception as exc:
        log.warning(
            "flush_groups_fallback",
            extra={"conversations": len(ready), "reason": f"{type(exc).__name__}: {exc}"},
        )
        metrics.record(redis_client.client, counts)
        results.update(flush_each([given[c] for c in ready]))
        return results
    try:
        settled = settle({c: (at, answers.get(c, [])) for c, at in ready.items()}, now, counts)
    except redis.exceptions.RedisError as exc:
        # Answered, but not acknowledged: the buffer still holds the groups, and the next
        # flush of each conversation finds nothing left to answer.
        for conversation_id in ready:
            log.error(
                "flush_group_failed",
                extra={"conversation_id": given[conversation_id], "reason": str(exc)},
            )
        settled = dict.fromkeys(ready, "failed")
    results.update({given[c]: outcome for c, outcome in settled.items()})
    return results


def flush_each(conversation_ids):
    """flush_group for each conversation (ids as text), one after the other; a failure is
    logged (flush_group_failed) and reported "failed" after the others are done. Returns
    {conversation_id: outcome}."""
    results = {}
    for conversation_id in conversation_ids:
        try:
            results[conversation_id] = flush_group(conversation_id)
        except Exception:
            # One conversation's failure must not hold up the others; reconcile_groups
            # answers it later from the database.
            db.session.rollback()
            log.exception("flush_group_failed", extra={"conversation_id": conversation_id})
            results[conversation_id] = "failed"
    return results


def rearm(decisions):
    """Schedule the flushes of the conversations whose decision was "wait", for their due
    time (one ZADD); returns the counts of the decisions ("flush_group_wait", ...)."""
    waiting = {c: d.at_us for c, d in decisions.items() if d.action == "wait"}
    if waiting:
        schedule_flushes(waiting)
    return collections.Counter(f"flush_group_{d.action}" for d in decisions.values())


def settle(answered, now, counts=()):
    """After the commit of flushes found ready: log each reply (flush_group), then in one
    Redis round trip acknowledge the groups to the buffer, count the flushes, replies and
    `counts` ({name: amount}), observe each reply's lateness and tell the consoles; flush
    again at once the conversations that received messages meanwhile; wake the generation
    or delivery pass once.

    `answered`: {conversation_id: (the decision's newest arrival in us, [Answer, ...])};
    `now`: the replies' stamp (us). Returns {conversation_id: "answered", "nothing" or
    "failed"}, "failed" when that conversation's acknowledgement failed (logged
    flush_group_failed; its next flush finds nothing left to answer). Raises Redis's error
    when every acknowledgement failed (the metrics and notices never fail it). The passes are
    woken whatever Redis answered: the replies are committed.
    """
    buffer = reply_buffer()
    counts = collections.Counter(counts)
    counts["flush_group_ready"] += len(answered)
    lateness, notices, results = [], [], {}
    for conversation_id, (_, answers) in answered.items():
        for answer in answers:
            late = (now - flush_due_us(answer.newest_us, quiet_us())) / 1_000_000
            lateness.append(late)
            notices.append(reply_notice(conversation_id, answer, now))
            log.info(
                "flush_group",
                extra={
                    "conversation_id": str(conversation_id),
                    "outcome": "answered",
                    **reply_fields(answer),
                    "lateness_s": round(late, 4),
                },
            )
        counts["replies_quiet"] += len(answers)
        results[conversation_id] = "answered" if answers else "nothing"
    written = [answer for _, answers in answered.values() for answer in answers]
    try:
        with buffer.pipeline() as pipe:
            for conversation_id, (decided_us, answers) in answered.items():
                newest = max([decided_us, *(answer.newest_us for answer in answers)])
                buffer.ack(conversation_id, newest, now, pipe)
            metrics.queue(pipe, counts, lateness, notices)
            replies = pipe.execute(raise_on_error=False)
        acks = dict(zip(answered, replies[: len(answered)], strict=True))
        failed = {c: r for c, r in acks.items() if isinstance(r, Exception)}
        if failed and len(failed) == len(acks):
            raise next(iter(failed.values()))
        for conversation_id, exc in failed.items():
            log.error(
                "flush_group_failed",
                extra={"conversation_id": str(conversation_id), "reason": str(exc)},
            )
            results[conversation_id] = "failed"
        if any(isinstance(r, Exception) for r in replies[len(answered) :]):
            log.warning("metrics_write_failed", extra={"reason": "pipeline command failed"})
        # Messages came in while these groups were being answered: look again at once, and
        # the decision will wait for their own quiet window.
        again = [c for c, r in acks.items() if c not in failed and buffer.remaining(r) is not None]
        if again:
            schedule_flushes(dict.fromkeys(again, now))
    finally:
        wake_passes(written)  # the replies are committed, whatever Redis answered
    return results


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
