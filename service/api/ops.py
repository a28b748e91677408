"""Operator endpoints: liveness, readiness and Prometheus metrics (not part of the API doc)."""

import time

from flask import Blueprint, g, request

from service.api.access import METRICS, token_required
from service.api.errors import unavailable
from service.extensions import redis_client
from service.infra import metrics
from service.pipeline import queries

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz():
    """The process is alive; checks no dependency."""
    return {"status": "ok"}


@bp.get("/readyz")
def readyz():
    """Ready to take webhooks and answer them: database, Redis, a worker and the scheduler."""
    checks = queries.readiness()
    failing = [name for name, check in checks.items() if not check["ok"]]
    if failing:  # workers and scheduler are only checked once Redis answers
        return unavailable(f"Not ready: {', '.join(failing)}.", "not_ready", checks=checks)
    return {"status": "ready", "checks": checks}


@bp.get("/metrics")
@token_required(METRICS)
def metrics_view():
    """Prometheus exposition."""
    try:
        body, content_type = metrics.render(redis_client.client, queries.gauges)
    except Exception as exc:  # a scrape must say why it failed, not 500 with a trace
        return unavailable(f"Metrics unavailable: {type(exc).__name__}: {exc}")
    return body, 200, {"Content-Type": content_type}


HTTP_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))


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
            # A label per method a client invents would grow /metrics without bound.
            method = request.method if request.method in HTTP_METHODS else "other"
            metrics.REQUEST_LATENCY.labels(method, route, response.status_code).observe(
                time.perf_counter() - started
            )
        return response


def init_app(app):
    app.register_blueprint(bp)
    time_requests(app)
