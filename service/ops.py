"""Operator endpoints: liveness, readiness and Prometheus metrics (not part of the API doc)."""

import time

from rq import Worker
from sqlalchemy import func, select, text

from flask import Blueprint, current_app, g, jsonify, request

from service import metrics
from service.extensions import db, redis_client
from service.models import HeldMessage, Message
from service.queueing import SCHEDULER_HEARTBEAT_KEY, get_queue, get_scheduler
from service.rules import EXPIRED, HELD, INBOUND

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz():
    """The process is alive; checks no dependency."""
    return {"status": "ok"}


def _check(name, probe, results):
    try:
        ok, detail = probe()
    except Exception as exc:  # any failure of a dependency means not ready
        ok, detail = False, f"{type(exc).__name__}: {exc}"
    results[name] = {"ok": ok, "detail": detail}


def _database():
    db.session.execute(text("SELECT 1"))
    return True, "reachable"


def _redis():
    redis_client.client.ping()
    return True, "reachable"


def _workers():
    workers = Worker.all(queue=get_queue())
    return bool(workers), f"{len(workers)} worker(s) registered"


def _scheduler():
    name = redis_client.client.get(SCHEDULER_HEARTBEAT_KEY)
    return name is not None, "heartbeat seen" if name else "no scheduler heartbeat"


@bp.get("/readyz")
def readyz():
    """Ready to take webhooks and answer them: database, Redis, a worker and the scheduler."""
    checks = {}
    _check("database", _database, checks)
    _check("redis", _redis, checks)
    if checks["redis"]["ok"]:
        _check("workers", _workers, checks)
        _check("scheduler", _scheduler, checks)
    db.session.rollback()
    ready = all(c["ok"] for c in checks.values()) and len(checks) == 4
    body = {"status": "ready" if ready else "not ready", "checks": checks}
    response = jsonify(body)
    response.status_code = 200 if ready else 503
    if not ready:
        response.headers["Retry-After"] = str(current_app.config["RETRY_AFTER_SECONDS"])
    return response


def _gauges():
    """Point-in-time values for /metrics."""
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
    db.session.rollback()
    queue = get_queue()
    return {
        "held_messages_waiting": (
            "Messages held for a conversation not created yet",
            held.get(HELD, 0),
        ),
        "held_messages_expired": ("Held messages dropped (kept as records)", held.get(EXPIRED, 0)),
        "open_groups": ("Conversations with inbound messages waiting for their reply", open_groups),
        "queue_depth": ("Jobs waiting in the RQ queue", queue.count),
        "scheduled_jobs": ("Jobs waiting in rq-scheduler", get_scheduler().count()),
    }


@bp.get("/metrics")
def metrics_view():
    """Prometheus exposition."""
    try:
        body, content_type = metrics.render(redis_client.client, _gauges)
    except Exception as exc:  # a scrape must say why it failed, not 500 with a trace
        return {"status": "unavailable", "detail": f"{type(exc).__name__}: {exc}"}, 503
    return body, 200, {"Content-Type": content_type}


def time_requests(app):
    """Measure every request for the latency histogram."""

    @app.before_request
    def start_timer():
        g.request_started = time.perf_counter()

    @app.after_request
    def observe(response):
        started = getattr(g, "request_started", None)
        if started is not None:
            route = request.url_rule.rule if request.url_rule else "unmatched"
            metrics.REQUEST_LATENCY.labels(request.method, route, response.status_code).observe(
                time.perf_counter() - started
            )
        return response


def init_app(app):
    app.register_blueprint(bp)
    time_requests(app)
