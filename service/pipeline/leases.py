"""Claims on outbox-like rows (deliveries, generations): one call in flight per row, the rows
of a conversation worked in order, and results fenced on the claim.

Both tables share the columns used here: reply_id (key), conversation_id, status ("pending"
while there is work), attempts, created_at (the conversation's order), next_attempt_at,
leased_until and last_attempt_at.
"""

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

from sqlalchemy import exists, or_, select, tuple_, update
from sqlalchemy.orm import aliased

from service.domain.clock import seconds_us, to_datetime
from service.domain.delivery import PENDING
from service.extensions import db
from service.infra import outbound

# Rows claimed and called at once: one calling thread each, so every claimed row is called at
# once and its lease needs to cover one call only.
CALL_THREADS = outbound.POOL_SIZE
# A lease covers the connect and read timeouts of one call, plus this for the database round
# trips around it.
LEASE_MARGIN_SECONDS = 5.0
# A pass goes on claiming while there is work (a row done makes the next one of its
# conversation due at once), for at most this long.
PASS_SECONDS = 10.0

_pools = {}
_pools_lock = threading.Lock()
log = logging.getLogger(__name__)


def lease_us(timeout_seconds):
    """How long a claim holds a row, in µs, for a call whose connect and read timeouts are
    `timeout_seconds` each: both, plus LEASE_MARGIN_SECONDS."""
    return seconds_us(2 * timeout_seconds + LEASE_MARGIN_SECONDS)


def finished(futures, timeout_seconds, action):
    """The calls of `futures` as they finish, for as long as a call may take (twice
    `timeout_seconds`, its connect and read timeouts, plus a second). A call still running
    then (a peer holding its headers back a byte at a time) is left to its lease: its answer
    is dropped, and the row is called again once the lease runs out. Logs `<action>_abandoned`
    with how many were left."""
    try:
        yield from as_completed(futures, timeout=2 * timeout_seconds + 1)
    except TimeoutError:
        late = sum(1 for future in futures if not future.done())
        log.warning(f"{action}_abandoned", extra={"calls": late})


def batches(claim, waiting):
    """The batches `claim()` returns (non-empty lists of claimed rows), while it finds any and
    for at most PASS_SECONDS; `waiting` (a queueing.Linger) decides whether an empty claim
    ends the pass or waits for new work, and takes the pass's last look. Use it closed
    (contextlib.closing), so a pass that stops early lets its key go at once."""
    ends = time.monotonic() + PASS_SECONDS
    try:
        while time.monotonic() < ends or waiting.release():
            claimed = claim()
            if claimed:
                yield claimed
            elif not waiting.idle(ends):
                return
    finally:
        waiting.release()


def callers(name):
    """This process's pool of CALL_THREADS threads named `name` (made on first use)."""
    with _pools_lock:
        if name not in _pools:
            _pools[name] = ThreadPoolExecutor(CALL_THREADS, thread_name_prefix=name)
        return _pools[name]


def claim_heads(model, now, limit, lease_us, extra=()):
    """Lease up to `limit` due heads of `model` (pending, due, lease free or run out, no
    earlier pending row in their conversation) for one attempt each, not committed: their
    attempts go up by one (the fence of the attempt's result) and their lease runs for
    `lease_us` µs from `now` (µs).

    Returns the rows (reply_id, conversation_id, attempts, created_at, then the `extra`
    columns of `model`). PostgreSQL skips rows
    another pass is claiming (SKIP LOCKED); SQLite serialises the transactions whole.
    """
    moment = to_datetime(now)
    earlier = aliased(model)
    heads = (
        select(model.reply_id)
        .where(
            model.status == PENDING,
            model.next_attempt_at <= moment,
            or_(model.leased_until.is_(None), model.leased_until <= moment),
            ~exists().where(
                earlier.conversation_id == model.conversation_id,
                earlier.status == PENDING,
                tuple_(earlier.created_at, earlier.reply_id)
                < tuple_(model.created_at, model.reply_id),
            ),
        )
        .order_by(model.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return db.session.execute(
        update(model)
        .where(model.reply_id.in_(heads))
        .values(
            attempts=model.attempts + 1,
            leased_until=to_datetime(now + lease_us),
            last_attempt_at=moment,
        )
        .returning(model.reply_id, model.conversation_id, model.attempts, model.created_at, *extra)
        .execution_options(synchronize_session=False)
    ).all()


def settle(model, claimed, **values):
    """Store an attempt's result on the row `claimed` (a dict with reply_id and attempts, as
    claimed) if the claim still holds: same attempt number, still pending. Not committed; the
    lease is released. Returns whether the row was updated (False: a later pass took the row
    over, and its result is the one that counts). Deliveries, the hot path, run the same fence
    as a compiled statement instead (statements.SETTLE_DELIVERY)."""
    return (
        db.session.execute(
            update(model)
            .where(
                model.reply_id == claimed["reply_id"],
                model.attempts == claimed["attempts"],
                model.status == PENDING,
            )
            .values(leased_until=None, **values)
            .execution_options(synchronize_session=False)
        ).rowcount
        == 1
    )
