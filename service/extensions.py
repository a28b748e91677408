"""Extensions, created unbound here and bound to the app in `create_app`.

Every layer below the HTTP one reaches the database and Redis through these, so this module
imports nothing from the service's own packages.
"""

import redis
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import MetaData

from flask import current_app

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

db = SQLAlchemy(metadata=MetaData(naming_convention=NAMING_CONVENTION))
migrate = Migrate()


def connect_redis(url, **options):
    """A Redis client that fails fast: RESP2 and raw bytes (RQ needs both), a 2 s connect
    timeout, and one immediate retry on a broken connection (a restarted server) but none on
    a timeout. redis-py 8 retries both ten times by default, which turns a stalled Redis
    into a minute-long wait instead of a 503. `options` go to `redis.Redis`."""
    retry = Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,))
    return redis.Redis.from_url(url, protocol=2, socket_connect_timeout=2, retry=retry, **options)


class RedisClient:
    """Holds one Redis connection pool per app, whose calls time out after 2 s (Redis answers
    in well under a millisecond; a call that takes seconds is a stall, and a webhook must get
    its 503 within a few seconds even when a new connection's handshake stalls and is
    retried once)."""

    def init_app(self, app):
        app.extensions["redis"] = connect_redis(
            app.config["REDIS_URL"], socket_timeout=2, health_check_interval=30
        )

    @property
    def client(self):
        return current_app.extensions["redis"]


redis_client = RedisClient()
