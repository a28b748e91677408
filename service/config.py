"""Configuration from the environment, read in one place."""

import base64
import os
from pathlib import Path

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
ROOT = Path(__file__).resolve().parent.parent


class ConfigError(RuntimeError):
    """A required setting is missing or malformed."""


def _number(env, name, default, cast=float):
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = cast(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {raw!r}")
    return value


def _flag(env, name, default):
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _tokens(env, name):
    """A comma-separated list of tokens or secrets (several, for rotation), whitespace trimmed
    and empty entries dropped: [] when unset."""
    return [token.strip() for token in (env.get(name) or "").split(",") if token.strip()]


def _delivery(env):
    """The outbound delivery settings (off unless REPLY_WEBHOOK_URL is set). Secrets are in the
    Standard Webhooks form `whsec_<base64>`, several comma-separated for rotation; one is
    required when the URL is set."""
    url = (env.get("REPLY_WEBHOOK_URL") or "").strip() or None
    secrets = _tokens(env, "REPLY_WEBHOOK_SECRET")
    if url is not None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"REPLY_WEBHOOK_URL must be an http(s) URL, got {url!r}")
        if not secrets:
            raise ConfigError("REPLY_WEBHOOK_SECRET is required when REPLY_WEBHOOK_URL is set")
        for secret in secrets:
            if not secret.startswith("whsec_") or not _base64(secret[len("whsec_") :]):
                raise ConfigError("REPLY_WEBHOOK_SECRET entries must look like whsec_<base64>")
    return {
        "REPLY_WEBHOOK_URL": url,
        "REPLY_WEBHOOK_SECRETS": secrets,
        "DELIVERY_TIMEOUT_SECONDS": _number(env, "DELIVERY_TIMEOUT_SECONDS", 5.0),
        "DELIVERY_RETRY_HOURS": _number(env, "DELIVERY_RETRY_HOURS", 24.0),
        "DELIVERY_MAX_BACKOFF_SECONDS": _number(env, "DELIVERY_MAX_BACKOFF_SECONDS", 30.0),
        # Whole seconds: rq-scheduler keeps periodic intervals as integers.
        "DELIVERY_INTERVAL": _number(env, "DELIVERY_INTERVAL", 1, int),
    }


def sentinel_settings(env):
    """The Redis Sentinel settings, or None when REDIS_SENTINELS is unset (REDIS_URL's server
    is used directly).

    REDIS_SENTINELS is `host:port,...` (an IPv6 host in brackets, `[::1]:26379`); the port
    defaults to 26379, Sentinel's own. The master is found under REDIS_SENTINEL_MASTER
    (default `mymaster`, the name in Redis's sample sentinel.conf); REDIS_SENTINEL_PASSWORD
    is the sentinels' own password, if they have one. REDIS_URL still gives the database
    index and the master's user and password; its host and port are not used.
    Raises ConfigError on a malformed address."""
    sentinels = []
    for entry in _tokens(env, "REDIS_SENTINELS"):
        host, colon, port = entry.rpartition(":")
        if not colon or "]" in port:  # no port, or only an IPv6 host's colons
            host, port = entry, "26379"
        host = host.strip("[]")
        # A URL (redis://host:26379) would pass as host "redis://host": say so instead.
        if not host or "/" in host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"REDIS_SENTINELS entries must be host:port, got {entry!r}")
        sentinels.append((host, int(port)))
    if not sentinels:
        return None
    return {
        "sentinels": sentinels,
        "master": (env.get("REDIS_SENTINEL_MASTER") or "").strip() or "mymaster",
        "password": env.get("REDIS_SENTINEL_PASSWORD") or None,
    }


GENERATOR_FALLBACKS = ("template", "fail")


def _generator(env):
    """The reply generator settings (off unless REPLY_GENERATOR_URL is set: the brief's
    template answers). REPLY_GENERATOR_FALLBACK says what a group gets when the generator
    keeps failing: "template" (the template's reply) or "fail" (no reply; the group is kept
    as failed for an operator to retry)."""
    url = (env.get("REPLY_GENERATOR_URL") or "").strip() or None
    if url is not None and not url.startswith(("http://", "https://")):
        raise ConfigError(f"REPLY_GENERATOR_URL must be an http(s) URL, got {url!r}")
    fallback = (env.get("REPLY_GENERATOR_FALLBACK") or "template").strip().lower()
    if fallback not in GENERATOR_FALLBACKS:
        raise ConfigError(f"REPLY_GENERATOR_FALLBACK must be template or fail, got {fallback!r}")
    return {
        "REPLY_GENERATOR_URL": url,
        "REPLY_GENERATOR_TOKEN": (env.get("REPLY_GENERATOR_TOKEN") or "").strip() or None,
        "REPLY_GENERATOR_TIMEOUT_SECONDS": _number(env, "REPLY_GENERATOR_TIMEOUT_SECONDS", 10.0),
        "REPLY_GENERATOR_ATTEMPTS": _number(env, "REPLY_GENERATOR_ATTEMPTS", 3, int),
        "REPLY_GENERATOR_MAX_BACKOFF_SECONDS": _number(
            env, "REPLY_GENERATOR_MAX_BACKOFF_SECONDS", 5.0
        ),
        "REPLY_GENERATOR_FALLBACK": fallback,
        "REPLY_GENERATOR_INTERVAL": _number(env, "REPLY_GENERATOR_INTERVAL", 1, int),
    }


def _base64(text):
    try:
        return len(base64.b64decode(text, validate=True)) > 0
    except ValueError:
        return False


def database_url(url):
    """Use psycopg2 for plain PostgreSQL URLs (SQLAlchemy 2.1 would pick psycopg 3)."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix) :]
    return url


def load_config(instance_path, env=None):
    """Build the Flask config mapping from environment variables."""
    env = os.environ if env is None else env
    sqlite_path = Path(instance_path) / "conversations.db"
    secrets = [s.strip() for s in env.get("WEBHOOK_SECRET", "").split(",") if s.strip()]
    return {
        "SQLALCHEMY_DATABASE_URI": database_url(
            env.get("DATABASE_URL") or f"sqlite:///{sqlite_path}"
        ),
        "REDIS_URL": env.get("REDIS_URL") or DEFAULT_REDIS_URL,
        "REDIS_SENTINEL": sentinel_settings(env),
        "RQ_QUEUE": env.get("RQ_QUEUE") or "conversations",
        # Pub/sub ignores the database index; unset, the channel is named after REDIS_URL's
        # index (service.infra.notices.channel), so deployments on one server stay apart.
        "LIVE_CHANNEL": (env.get("LIVE_CHANNEL") or "").strip() or None,
        "MAX_CONTENT_LENGTH": _number(env, "MAX_BODY_BYTES", 1024 * 1024, int),
        "MAX_MESSAGE_CHARS": _number(env, "MAX_MESSAGE_CHARS", 4096, int),
        "QUIET_SECONDS": _number(env, "QUIET_SECONDS", 5.0),
        "HOLD_SECONDS": _number(env, "HOLD_SECONDS", 6.0),
        "SCHEDULER_INTERVAL": _number(env, "SCHEDULER_INTERVAL", 0.1),
        "RECONCILE_INTERVAL": _number(env, "RECONCILE_INTERVAL", 2, int),
        "RECONCILE_GRACE_SECONDS": _number(env, "RECONCILE_GRACE_SECONDS", 2.0),
        "RETRY_AFTER_SECONDS": _number(env, "RETRY_AFTER_SECONDS", 5, int),
        "WEBHOOK_SECRETS": secrets,
        # Bearer tokens for the reads and the live stream, and for /metrics (service.api.access).
        "API_TOKENS": _tokens(env, "API_TOKEN"),
        "METRICS_TOKENS": _tokens(env, "METRICS_TOKEN"),
        "STREAM_SLOTS": _number(env, "STREAM_SLOTS", 4, int),
        "STREAM_MAX_SECONDS": _number(env, "STREAM_MAX_SECONDS", 300, int),
        "CONSOLE_DIST": env.get("CONSOLE_DIST") or str(ROOT / "console" / "dist"),
        "LOG_LEVEL": (env.get("LOG_LEVEL") or "INFO").upper(),
        # No pre-ping on every checkout (a round trip per request): only connections unused
        # for DB_PING_IDLE_SECONDS are pinged (service.infra.database.check_idle_connections).
        "SQLALCHEMY_ENGINE_OPTIONS": {
            "pool_size": _number(env, "DB_POOL_SIZE", 10, int),
            "max_overflow": _number(env, "DB_MAX_OVERFLOW", 10, int),
            "pool_recycle": 1800,
        },
        # A PostgreSQL call of a web or RQ worker with no answer for this long fails (503).
        "DB_READ_TIMEOUT_SECONDS": _number(env, "DB_READ_TIMEOUT_SECONDS", 2.0),
        # A pooled connection unused for longer is pinged before use (service.infra.database).
        "DB_PING_IDLE_SECONDS": _number(env, "DB_PING_IDLE_SECONDS", 1.0),
        # Server-side prepared statements on the message hot path. Turn off behind a pooler
        # that does not keep a server connection per client (PgBouncer in transaction mode).
        "DB_PREPARED_STATEMENTS": _flag(env, "DB_PREPARED_STATEMENTS", True),
        **_delivery(env),
        **_generator(env),
    }
