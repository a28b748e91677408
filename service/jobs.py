"""RQ jobs. They take ids, not objects, and run inside the app context of the worker."""

from functools import wraps

from service import events
from service.extensions import db


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
def reconcile_groups():
    """Re-arm groups the database says are overdue (Redis lost data, a worker died)."""
    return [str(c) for c in events.reconcile()]


@_job
def expire_held():
    """Join or expire held messages whose hold window has passed."""
    return events.expire_held()
