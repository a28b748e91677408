"""RQ jobs. They take ids, not objects, and run inside the app context of the worker."""

import logging
from functools import wraps

from service import events
from service.extensions import db

log = logging.getLogger(__name__)


def _job(func):
    @wraps(func)
    def run(*args):
        try:
            return func(*args)
        finally:
            db.session.remove()

    return run


@_job
def flush_group(conversation_id):
    """Answer a conversation's group once it has been quiet for the window, else re-arm."""
    return events.flush(conversation_id)


@_job
def flush_groups(conversation_ids):
    """flush_group for each conversation whose flush came due at the same scheduler poll."""
    results = {}
    for conversation_id in conversation_ids:
        try:
            results[conversation_id] = events.flush(conversation_id)
        except Exception:
            # One conversation's failure must not hold up the others; reconcile_groups
            # answers it later from the database.
            db.session.rollback()
            log.exception("flush_group_failed", extra={"conversation_id": conversation_id})
            results[conversation_id] = "failed"
    failed = [c for c, result in results.items() if result == "failed"]
    if failed:
        # Fail the job once the others are done, so the failure shows in RQ's registry.
        raise RuntimeError(f"flush_group failed for {len(failed)} conversation(s): {failed}")
    return results


@_job
def reconcile_groups():
    """Re-arm groups the database says are overdue (Redis lost data, a worker died)."""
    return [str(c) for c in events.reconcile()]


@_job
def expire_held():
    """Join or expire held messages whose hold window has passed."""
    return events.expire_held()
