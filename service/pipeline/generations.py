"""Replies written by the team's bot (REPLY_GENERATOR_URL): generate_replies and the
operator's retry_generations.

A group closes exactly once, under its conversation's row lock, in the flush (or close) that
records it (service.pipeline.replies.answer_groups): its messages are linked to the reply id
and a `generations` row is written, pending. A pass then claims the due heads (one group per
conversation, the oldest not stored or failed, so replies are stored in group order) with a
lease, in a short transaction committed before any HTTP call; calls the generator
concurrently outside any transaction and any lock, with the reply id as idempotency key; and
stores each reply in another short transaction fenced on the claim, so a pass whose lease ran
out and was taken over stores nothing. A worker killed mid-call leaves a lease that runs out,
and the next pass asks again with the same idempotency key.
"""

import logging
from contextlib import closing

from sqlalchemy import select, update

from flask import current_app

from service.domain import clock, generation
from service.domain.clock import to_datetime, to_us
from service.domain.generation import (
    FAILED,
    GENERATED,
    GENERATOR,
    GIVE_UP,
    PENDING,
    RETRY,
    STORED,
    TEMPLATE,
    next_step,
)
from service.domain.rules import INBOUND, OUTBOUND, reply_content
from service.extensions import db, redis_client
from service.infra import metrics, outbound, queueing
from service.infra.database import commit_or_rollback
from service.infra.models import Generation, Message
from service.infra.notices import notice, publish
from service.infra.statements import STORE_DELIVERY, STORE_REPLY, TOUCH_CONVERSATION
from service.pipeline import leases
from service.pipeline.replies import Answer, announce_reply

log = logging.getLogger(__name__)

# The most of a generator's answer that is read (a reply is at most MAX_MESSAGE_CHARS).
ANSWER_LIMIT_BYTES = 256 * 1024


def generator_on():
    """Whether replies come from the team's bot (REPLY_GENERATOR_URL is set)."""
    return current_app.config["REPLY_GENERATOR_URL"] is not None


def lease_us():
    """How long a claim holds a group, in µs (leases.lease_us of
    REPLY_GENERATOR_TIMEOUT_SECONDS)."""
    return leases.lease_us(current_app.config["REPLY_GENERATOR_TIMEOUT_SECONDS"])


def claim(now, limit):
    """Lease up to `limit` due heads (see leases.claim_heads) for one call each, and read their
    groups; committed. Returns a list of dicts: reply_id, conversation_id, attempts (this
    call's number, the fence of its result), created_at (when the group closed), messages
    ((id, content, timestamp) in arrival order)."""
    rows = leases.claim_heads(Generation, now, limit, lease_us())
    claimed = {row.reply_id: dict(row._mapping, messages=[]) for row in rows}
    if claimed:
        for reply_id, message_id, content, timestamp in db.session.execute(
            select(Message.reply_id, Message.id, Message.content, Message.timestamp)
            .where(Message.reply_id.in_(list(claimed)), Message.type == INBOUND)
            .order_by(Message.received_at, Message.id)
        ):
            claimed[reply_id]["messages"].append((message_id, content, timestamp))
    commit_or_rollback()
    return sorted(claimed.values(), key=lambda c: (c["created_at"], c["reply_id"]))


def call(group, url, token, timeout):
    """POST one claimed group to the generator; no database or app context (runs in a calling
    thread). The reply id is the `Idempotency-Key` (IETF draft "The Idempotency-Key HTTP Header
    Field"): every call for one group carries the same. Returns a generation.Answer."""
    body = outbound.body_of(
        generation.request(
            group["conversation_id"], group["reply_id"], group["messages"], group["created_at"]
        )
    )
    headers = {"Content-Type": "application/json", "Idempotency-Key": str(group["reply_id"])}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    status, error, retry_after, content = outbound.exchange(
        url, body, headers, timeout, ANSWER_LIMIT_BYTES
    )
    return generation.Answer(status, error, retry_after, content)


def record(group, answer, now):
    """Act on a call's answer if our claim still holds: store the reply (the generator's, or
    the template's once the generator is given up on with REPLY_GENERATOR_FALLBACK=template),
    schedule a retry, or mark the group failed; committed. Returns the outcome stored
    (GENERATED, RETRY, TEMPLATE or FAILED), or None when the claim was lost."""
    config = current_app.config
    step = next_step(
        answer,
        group["attempts"],
        config["REPLY_GENERATOR_ATTEMPTS"],
        now,
        config["REPLY_GENERATOR_MAX_BACKOFF_SECONDS"],
        config["MAX_MESSAGE_CHARS"],
    )
    fields = {
        "reply_id": str(group["reply_id"]),
        "conversation_id": str(group["conversation_id"]),
        "attempt": group["attempts"],
        "status": answer.status,
    }
    attempt = {"last_status": answer.status, "last_error": step.error}
    if step.outcome == GENERATED:
        outcome = GENERATED
        stored = store_reply(group, step.content, GENERATOR, now, attempt)
    elif step.outcome == GIVE_UP and config["REPLY_GENERATOR_FALLBACK"] == TEMPLATE:
        outcome = TEMPLATE
        content = reply_content([message_id for message_id, _, _ in group["messages"]])
        stored = store_reply(group, content, TEMPLATE, now, attempt)
    elif step.outcome == GIVE_UP:
        outcome = FAILED
        stored = leases.settle(Generation, group, status=FAILED, next_attempt_at=None, **attempt)
        commit_or_rollback()
    else:
        outcome = RETRY
        stored = leases.settle(
            Generation, group, next_attempt_at=to_datetime(step.next_attempt_us), **attempt
        )
        commit_or_rollback()
    if not stored:
        log.warning("generate_reply", extra={**fields, "outcome": "lost_claim"})
        return None
    latency = None
    if outcome in (GENERATED, TEMPLATE):
        latency = max(0.0, (now - to_us(group["created_at"])) / 1_000_000)
    live = None
    if outcome == FAILED:
        live = notice(
            "generation.failed",
            conversation_id=group["conversation_id"],
            reply_id=group["reply_id"],
        )
    ended = None if outcome == RETRY else outcome
    metrics.record_call(
        redis_client.client, metrics.GENERATION, step.outcome, ended, latency=latency, notice=live
    )
    if outcome == GENERATED:
        log.info("generate_reply", extra={**fields, "outcome": outcome, "latency_s": latency})
    else:
        log.warning("generate_reply", extra={**fields, "outcome": outcome, "error": step.error})
    return outcome


def store_reply(group, content, source, now, attempt):
    """Write the group's reply (with its delivery when delivery is on) and mark the group
    stored, in one transaction fenced on the claim; committed. Then announce the reply.
    Returns False (nothing written) when the claim was lost.

    The reply's `timestamp` is when it was written; its place in the conversation (its
    `received_at`, which orders messages and deliveries) is its group's closure, so replies
    read and are delivered in group order whichever worker, on whichever clock, wrote them.
    """
    moment = to_datetime(now)
    settled = leases.settle(
        Generation,
        group,
        status=STORED,
        source=source,
        stored_at=moment,
        next_attempt_at=None,
        **attempt,
    )
    if not settled:
        db.session.rollback()
        return False
    connection = db.session.connection()
    conversation_id, closed_at = group["conversation_id"], group["created_at"]
    STORE_REPLY.execute(
        connection,
        id=group["reply_id"],
        conversation_id=conversation_id,
        type=OUTBOUND,
        content=content,
        timestamp=moment,
        received_at=closed_at,
        generated=True,
    )
    if current_app.config["REPLY_WEBHOOK_URL"] is not None:
        STORE_DELIVERY.execute(
            connection,
            reply_id=group["reply_id"],
            conversation_id=conversation_id,
            created_at=closed_at,
        )
    db.session.execute(TOUCH_CONVERSATION, {"at": moment, "conversation_id": conversation_id})
    commit_or_rollback()
    ids = [message_id for message_id, _, _ in group["messages"]]
    answer = Answer(group["reply_id"], ids, to_us(closed_at), generating=False)
    announce_reply(conversation_id, answer, None, now)
    return True


def generate_replies(linger=False):
    """One generation pass: claim the due heads, call the generator for them concurrently,
    act on each answer, and again while groups come due (a stored reply frees the next group
    of its conversation), for at most leases.PASS_SECONDS. With `linger` (a pass queued by
    new work) it also waits for new work between claims (queueing.Linger). Returns the calls
    by outcome ({"generated": n, "retry": n, "template": n, "failed": n}); all zero when the
    generator is off. Raises the database's error of a claim (a claim not committed claims
    nothing), and RuntimeError after the pass when some answers could not be recorded (logged
    as generate_reply_failed; those groups are asked again once their lease runs out).
    """
    totals = {GENERATED: 0, RETRY: 0, TEMPLATE: 0, FAILED: 0}
    if not generator_on():
        return totals
    waiting = queueing.generate_linger(linger, leases.PASS_SECONDS)
    config = current_app.config
    url, token = config["REPLY_GENERATOR_URL"], config["REPLY_GENERATOR_TOKEN"]
    timeout = config["REPLY_GENERATOR_TIMEOUT_SECONDS"]
    failures = 0
    claims = leases.batches(lambda: claim(clock.now_us(), leases.CALL_THREADS), waiting)
    with closing(claims):
        for claimed in claims:
            calls = {
                leases.callers("generate_reply").submit(call, group, url, token, timeout): group
                for group in claimed
            }
            for future in leases.finished(calls, timeout, "generate_replies"):
                group = calls[future]
                try:
                    outcome = record(group, future.result(), clock.now_us())
                except Exception:
                    # One group's failure must not lose the answers the others got; its
                    # lease runs out and it is asked again.
                    db.session.rollback()
                    log.exception(
                        "generate_reply_failed",
                        extra={
                            "reply_id": str(group["reply_id"]),
                            "conversation_id": str(group["conversation_id"]),
                        },
                    )
                    failures += 1
                    continue
                if outcome is not None:
                    totals[outcome] += 1
            if not all(future.done() for future in calls):
                break  # their threads are busy: the next pass goes on
    if any(totals.values()):
        log.info("generate_replies", extra=dict(totals))
    if failures:
        # Fail the job once the others are done, so the failure shows in RQ's registry.
        raise RuntimeError(f"generate_replies could not record {failures} answer(s)")
    return totals


def retry_generations(reply_ids=None, all_failed=False):
    """Give failed groups another go (an operator's retry): the ones in `reply_ids` (UUIDs)
    that failed, or every failed one with `all_failed`. Each becomes pending and due now with
    REPLY_GENERATOR_ATTEMPTS fresh attempts, its last error kept. Being the oldest of its
    conversation, it is answered before the groups that closed after it. Returns how many
    were retried; queues a pass when the generator is on. Raises the database's error with
    nothing changed."""
    if not all_failed and not reply_ids:
        return 0
    moment = to_datetime(clock.now_us())
    statement = update(Generation).where(Generation.status == FAILED)
    if not all_failed:
        statement = statement.where(Generation.reply_id.in_(list(reply_ids)))
    rows = db.session.execute(
        statement.values(status=PENDING, attempts=0, next_attempt_at=moment, leased_until=None)
        .returning(Generation.reply_id, Generation.conversation_id)
        .execution_options(synchronize_session=False)
    ).all()
    commit_or_rollback()
    for reply_id, conversation_id in rows:
        log.info(
            "retry_generations",
            extra={"reply_id": str(reply_id), "conversation_id": str(conversation_id)},
        )
        publish(
            redis_client.client,
            "generation.retried",
            conversation_id=conversation_id,
            reply_id=reply_id,
        )
    if rows and generator_on():
        queueing.generate_soon()
    return len(rows)
