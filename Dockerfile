# syntax=docker/dockerfile:1
# One image for every process of the service. The default command is the web server; the same
# image runs the worker, the scheduler and the migrations (see docker-compose.yml):
#   gunicorn -c gunicorn.conf.py wsgi:app | flask worker | flask scheduler | flask db upgrade

# --- console: the Vue front end, built into /console/dist --------------------------------------
FROM node:24-slim AS console
WORKDIR /console
# console/ is optional: the consol[e] globs match nothing without it, and the stage then yields
# an empty dist (no /ui/ in the image). The lock is copied before the sources, so `npm ci` stays
# cached until package-lock.json changes. console-build.sh explains itself.
COPY docker/console-build.sh consol[e]/package.json consol[e]/package-lock.json ./
RUN --mount=type=cache,target=/root/.npm sh console-build.sh deps
COPY docker/console-build.sh consol[e]/ ./
RUN sh console-build.sh build

# --- builder: the runtime dependencies, from the hashed lock, into a venv -----------------------
FROM python:3.13-slim AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
# Only the lock: this layer is rebuilt when requirements.lock changes, not when the code does.
COPY requirements.lock /tmp/requirements.lock
RUN --mount=type=cache,target=/root/.cache/pip \
    /opt/venv/bin/pip install --require-hashes --no-deps -r /tmp/requirements.lock \
    && /opt/venv/bin/python -m compileall -q /opt/venv/lib

# --- final: no compilers, no pip cache, no node; runs as an unprivileged user ------------------
FROM python:3.13-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    FLASK_APP=wsgi \
    PORT=8000
RUN groupadd --gid 10001 app \
    && useradd --uid 10001 --gid app --home-dir /app --no-create-home --shell /usr/sbin/nologin app
WORKDIR /app
COPY --from=builder /opt/venv /opt/venv
# Code stays root-owned (read-only to the app); only instance/ (SQLite fallback) is writable.
COPY docker/ ./docker/
COPY wsgi.py gunicorn.conf.py ./
COPY migrations/ ./migrations/
COPY service/ ./service/
COPY --from=console /console/dist/ ./console/dist/
RUN mkdir -p instance && chown app:app instance \
    && chmod 0755 docker/entrypoint.sh \
    && python -m compileall -q service migrations wsgi.py gunicorn.conf.py
USER app:app
EXPOSE 8000
ENTRYPOINT ["/app/docker/entrypoint.sh"]
CMD ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
