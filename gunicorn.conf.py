"""gunicorn settings for the web process; every value can be overridden from the environment."""

import os
import tempfile

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"
# Threads keep connections alive cheaply and let console streams wait without a process each.
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("WEB_THREADS", "8"))
# The webhook path is short; a request that takes this long is stuck, not busy.
timeout = int(os.environ.get("WEB_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("WEB_GRACEFUL_TIMEOUT", "20"))
keepalive = 5
# No runtime control socket: nothing uses it and it must not leak into shared directories.
control_socket_disable = True
accesslog = os.environ.get("WEB_ACCESS_LOG") or None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()

# Metrics of all worker processes are merged from files in one directory (prometheus_client
# multiprocess mode). It must be set before the app, and so prometheus_client, is imported.
_metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if not _metrics_dir:
    _metrics_dir = tempfile.mkdtemp(prefix="conversations-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir
for _name in os.listdir(_metrics_dir):
    os.remove(os.path.join(_metrics_dir, _name))


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker):
    # The app is loaded: keep its long-lived objects out of the collector's full passes,
    # which otherwise pause every thread of the worker for about 100 ms (docs/benchmarks.md).
    from service.runtime import freeze_startup_objects

    freeze_startup_objects()
