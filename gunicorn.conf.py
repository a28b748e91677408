"""gunicorn settings for the web process; every value can be overridden from the environment."""

import os
import tempfile

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"
# Threads keep connections alive cheaply and let console streams wait without a process each.
# gunicorn's gthread worker, answering the errors gunicorn raises itself (request line or
# headers too large, malformed requests) in the service's JSON error shape.
worker_class = "service.web_worker.JsonErrorThreadWorker"
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
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="conversations-metrics-")


def on_starting(server):
    # Once per master start, not on a reload (SIGHUP reads this file again): the files of
    # live workers hold the counts since start, and a reload must not reset them.
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    for name in os.listdir(directory):
        os.remove(os.path.join(directory, name))


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker):
    from service.infra.database import bound_waits_of_serving_process
    from service.runtime import freeze_startup_objects

    bound_waits_of_serving_process(worker.app.wsgi())
    # The app is loaded: keep its long-lived objects out of the collector's full passes,
    # which otherwise pause every thread of the worker for about 100 ms (docs/benchmarks.md).
    freeze_startup_objects()
