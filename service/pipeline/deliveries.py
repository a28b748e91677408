"""Delivering replies to REPLY_WEBHOOK_URL from the outbox (the `deliveries` table, written
with each reply by service.pipeline.replies): deliver_replies and the operator's
retry_deliveries.

A pass claims the due heads of the conversations (one reply each, the oldest not yet
delivered or dead) with a lease, in a short transaction committed before any HTTP call; sends
them concurrently outside any transaction; and records each answer in another short
transaction fenced on the claim (the attempt number), so a pass whose lease ran out and was
taken over records nothing. A worker killed mid-delivery leaves a lease that runs out; the
next pass sends again with the same `webhook-id` (at least once).
"""

import logging
from contextlib import closing

from sqlalchemy import select, update

from flask import current_app

from service.domain import clock
from service.domain.clock import to_datetime, to_us
from service.domain.delivery import DEAD, DELIVERED, PENDING, RETRY, event, next_step
from service.extensions import db, redis_client
from service.infra import metrics, outbound, queueing
from service.infra.database import commit_or_rollback
from service.infra.models import Delivery, Message
from service.infra.notices import notice, publish
from service.infra.statements import SETTLE_DELIVERY
from service.pipeline import leases

log = logging.getLogger(__name__)


def delivery_on():
    """Whether replies are delivered (REPLY_WEBHOOK_URL is set)."""
    return current_app.config["REPLY_WEBHOOK_URL"] is not None


def lease_us():
    """How long a claim holds a delivery, in µs (leases.lease_us of DELIVERY_TIMEOUT_SECONDS)."""
    return leases.lease_us(current_app.config["DELIVERY_TIMEOUT_SECONDS"])


def claim(now, limit):
    """Lease up to `limit` due heads (pending, due, lease free or run out, no earlier pending
    reply in their conversation) for one attempt each, and read what to send; committed.

    Returns a list of dicts: reply_id, conversation_id, attempts (this attempt's number, the
    fence of its result), created_at, retry_from, content, message_ids (answered inbound ids
    in arrival order). PostgreSQL skips rows another pass is claiming (SKIP LOCKED); SQLite
    serialises the transactions whole.
    """
    rows = leases.claim_heads(Delivery, now, limit, lease_us(), extra=[Delivery.retry_from])
    claimed = {row.reply_id: dict(row._mapping, message_ids=[]) for row in rows}
    if claimed:
        ids = list(claimed)
        for reply_id, content in db.session.execute(
            select(Message.id, Message.content).where(Message.id.in_(ids))
        ):
            claimed[reply_id]["content"] = content
        for message_id, reply_id in db.session.execute(
            select(Message.id, Message.reply_id)
            .where(Message.reply_id.in_(ids))
            .order_by(Message.received_at, Message.id)
        ):
            claimed[reply_id]["message_ids"].append(message_id)
    commit_or_rollback()
    return sorted(claimed.values(), key=lambda c: (c["created_at"], c["reply_id"]))


def send(delivery, url, secrets, timeout, now):
    """POST one claimed delivery's `reply.created` event, signed; no database or app context
    (runs in a sending thread). Returns the domain Answer."""
    moment = to_datetime(now)
    body = outbound.body_of(
        event(
            delivery["reply_id"],
            delivery["conversation_id"],
            delivery["content"],
            delivery["message_ids"],
            delivery["created_at"],
        )
    )
    headers = outbound.signed_headers(secrets, delivery["reply_id"], moment, body)
    return outbound.post(url, body, headers, timeout)


def record(delivery, answer, now):
    """Store an attempt's result if our claim still holds (same attempt number, still
    pending), committed; then count it, log it and tell the consoles. Returns the Step, or
    None when the claim was lost (a later pass took the delivery over)."""
    config = current_app.config
    step = next_step(
        answer,
        delivery["attempts"],
        now,
        to_us(delivery["retry_from"]),
        config["DELIVERY_RETRY_HOURS"],
        config["DELIVERY_MAX_BACKOFF_SECONDS"],
    )
    status = PENDING if step.outcome == RETRY else step.outcome
    moment = to_datetime(now)
    values = {
        "status": status,
        "last_status": answer.status,
        "last_error": step.error,
        "next_attempt_at": (
            to_datetime(step.next_attempt_us) if step.next_attempt_us is not None else None
        ),
        "delivered_at": moment if step.outcome == DELIVERED else None,
    }
    stored = (
        SETTLE_DELIVERY.execute(
            db.session.connection(),
            reply_id=delivery["reply_id"],
            attempts=delivery["attempts"],
            **values,
        ).rowcount
        == 1
    )
    commit_or_rollback()
    fields = {
        "reply_id": str(delivery["reply_id"]),
        "conversation_id": str(delivery["conversation_id"]),
        "attempt": delivery["attempts"],
        "status": answer.status,
        "outcome": step.outcome if stored else "lost_claim",
    }
    if not stored:
        log.warning("deliver_reply", extra=fields)
        return None
    latency = None
    if step.outcome == DELIVERED:
        latency = max(0.0, (now - to_us(delivery["created_at"])) / 1_000_000)
    live = notice(
        "delivery.updated",
        conversation_id=delivery["conversation_id"],
        reply_id=delivery["reply_id"],
        status=status,
    )
    ended = None if step.outcome == RETRY else step.outcome
    metrics.record_call(
        redis_client.client, metrics.DELIVERY, step.outcome, ended, latency=latency, notice=live
    )
    if step.outcome == DELIVERED:
        log.info("deliver_reply", extra={**fields, "latency_s": round(latency, 4)})
    else:
        log.warning("deliver_reply", extra={**fields, "error": step.error})
    return step


def deliver_replies(linger=False):
    """One delivery pass: claim the due heads, send them concurrently, record each answer, and
    again while replies come due (a delivered head frees the next one), for at most
    leases.PASS_SECONDS. With `linger` (a pass queued by new work) it also waits for new work
    between claims (queueing.Linger). Returns {"delivered": n, "retry": n, "dead": n}
    (attempts by outcome); all zero when delivery is off. Raises the database's error (a claim
    not committed claims nothing; a result not recorded is sent again once its lease runs
    out)."""
    totals = {DELIVERED: 0, RETRY: 0, DEAD: 0}
    if not delivery_on():
        return totals
    waiting = queueing.deliver_linger(linger, leases.PASS_SECONDS)
    config = current_app.config
    url, secrets = config["REPLY_WEBHOOK_URL"], config["REPLY_WEBHOOK_SECRETS"]
    timeout = config["DELIVERY_TIMEOUT_SECONDS"]
    claims = leases.batches(lambda: claim(clock.now_us(), leases.CALL_THREADS), waiting)
    with closing(claims):
        for claimed in claims:
            sending = {
                leases.callers("deliver_reply").submit(
                    send, delivery, url, secrets, timeout, clock.now_us()
                ): delivery
                for delivery in claimed
            }
            for future in leases.finished(sending, timeout, "deliver_replies"):
                step = record(sending[future], future.result(), clock.now_us())
                if step is not None:
                    totals[step.outcome] += 1
            if not all(future.done() for future in sending):
                break  # their threads are busy: the next pass goes on
    if any(totals.values()):
        log.info("deliver_replies", extra=dict(totals))
    return totals


def retry_deliveries(reply_ids=None, all_dead=False):
    """Give dead deliveries another go (an operator's retry): the ones in `reply_ids` (UUIDs)
    that are dead, or every dead one with `all_dead`. Each becomes pending and due now, its
    attempts and last error kept, its retry window (DELIVERY_RETRY_HOURS) starting again now.
    Returns how many were retried; queues a pass when delivery is on. Raises the database's
    error with nothing changed."""
    if not all_dead and not reply_ids:
        return 0
    now = clock.now_us()
    moment = to_datetime(now)
    statement = update(Delivery).where(Delivery.status == DEAD)
    if not all_dead:
        statement = statement.where(Delivery.reply_id.in_(list(reply_ids)))
    rows = db.session.execute(
        statement.values(
            status=PENDING, next_attempt_at=moment, retry_from=moment, leased_until=None
        )
        .returning(Delivery.reply_id, Delivery.conversation_id)
        .execution_options(synchronize_session=False)
    ).all()
    commit_or_rollback()
    for reply_id, conversation_id in rows:
        log.info(
            "retry_deliveries",
            extra={"reply_id": str(reply_id), "conversation_id": str(conversation_id)},
        )
        publish(
            redis_client.client,
            "delivery.updated",
            conversation_id=conversation_id,
            reply_id=reply_id,
            status=PENDING,
        )
    if rows and delivery_on():
        queueing.deliver_soon()
    return len(rows)
