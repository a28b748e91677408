"""Extensions, created unbound here and bound to the app in `create_app`.

Every layer below the HTTP one reaches the database and Redis through these, so this module
imports nothing from the service's own packages.
"""

import redis
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
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


class RedisClient:
    """Holds one Redis connection pool per app; RQ needs raw bytes, so no decoding."""

    def init_app(self, app):
        app.extensions["redis"] = redis.Redis.from_url(
            app.config["REDIS_URL"],
            protocol=2,
            socket_connect_timeout=2,
            socket_timeout=5,
            health_check_interval=30,
        )

    @property
    def client(self):
        return current_app.extensions["redis"]


redis_client = RedisClient()
