"""RQ entry points, at stable dotted paths (`service.jobs.<name>`), each named after its use
case. They take ids, not objects, and run inside the worker's app context.

May import: `service.pipeline` and below. Never `service.api` or `service.cli`.
"""

from functools import wraps

from service.extensions import db
from service.pipeline import deliveries, generations, holds, replies


def _job(func):
    @wraps(func)
    def run(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        finally:
            db.session.remove()

    return run


@_job
def flush_group(conversation_ids):
    """flush_group for the conversations (ids as text) whose flush came due at one scheduler
    poll, as one batch (replies.flush_groups). Returns {conversation_id: outcome}; raises
    RuntimeError naming the ones that failed, after the others are done."""
    results = replies.flush_groups(conversation_ids)
    failed = [c for c, result in results.items() if result == "failed"]
    if failed:
        # Fail the job once the others are done, so the failure shows in RQ's registry.
        raise RuntimeError(f"flush_group failed for {len(failed)} conversation(s): {failed}")
    return results


@_job
def reconcile_groups():
    """Re-arm groups the database says are overdue (Redis lost data, a worker died); returns
    the conversation ids re-armed, as text."""
    return [str(c) for c in replies.reconcile_groups()]


@_job
def expire_held():
    """Join or expire held messages whose hold window has passed; returns how many expired."""
    return holds.expire_held()


@_job
def deliver_replies(linger=False):
    """One delivery pass: send the due replies to REPLY_WEBHOOK_URL and record the answers;
    returns the attempts by outcome ({"delivered": n, "retry": n, "dead": n}). `linger`: a
    pass queued by new work, which waits a little for more (queueing.Linger)."""
    return deliveries.deliver_replies(linger)


@_job
def generate_replies(linger=False):
    """One generation pass: ask REPLY_GENERATOR_URL for the due groups' replies and store them;
    returns the calls by outcome ({"generated": n, "retry": n, "template": n, "failed": n}).
    `linger`: a pass queued by new work, which waits a little for more (queueing.Linger)."""
    return generations.generate_replies(linger)
