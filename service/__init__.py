"""WhatsApp conversation webhook receiver: the app shell.

The packages are layers, each importing only the ones below it (tests/unit/test_layers.py):

    service.api, service.jobs, service.cli    entry points: HTTP, RQ jobs, Flask CLI
    service.pipeline                          use cases, one transaction each
    service.infra                             database, Redis buffer, queues, notices, metrics
    service.domain                            pure rules and the arrival clock

This module (`create_app`), `config`, `extensions`, `logs`, `runtime` and `web_worker` are
the shell.
`config` and `extensions` import nothing of the service's own, so any layer but `domain` may
use them. docs/architecture.md has the map and the path of one message through it.
"""

import os
import re
import uuid

from dotenv import load_dotenv

from flask import Flask, g, request

from service.config import database_url, load_config

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def create_app(overrides=None):
    """Build the app: config, extensions, blueprints and CLI commands."""
    load_dotenv(os.path.join(os.getcwd(), ".env"))
    app = Flask(__name__, instance_relative_config=True)
    app.config.update(load_config(app.instance_path))
    app.config.update(
        API_TITLE="Conversations webhook receiver",
        API_VERSION="1.0",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="/docs",
        OPENAPI_SWAGGER_UI_URL="/docs/assets/",
        API_SPEC_OPTIONS={
            "info": {
                "description": "Receives WhatsApp customer-service events and answers each "
                "group of a customer's messages once, 5 s after the last one."
            }
        },
    )
    if overrides:
        app.config.update(overrides)
    app.config["SQLALCHEMY_DATABASE_URI"] = database_url(app.config["SQLALCHEMY_DATABASE_URI"])
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        os.makedirs(app.instance_path, exist_ok=True)
    if not app.testing:
        from service.logs import configure_logging

        configure_logging(app.config["LOG_LEVEL"])

    from service import api, cli
    from service.extensions import db, migrate, redis_client
    from service.infra import database, models  # noqa: F401 (models: the schema's tables)

    database.configure_engines(app)
    db.init_app(app)
    database.init_app(app)
    migrate.init_app(app, db, directory=os.path.join(os.path.dirname(__file__), "..", "migrations"))
    redis_client.init_app(app)
    api.init_app(app)
    cli.init_app(app)

    @app.before_request
    def assign_request_id():
        given = request.headers.get("X-Request-ID", "")
        g.request_id = given if REQUEST_ID.match(given) else uuid.uuid4().hex

    @app.teardown_request
    def end_session(exc):
        # Flask-SQLAlchemy ends the session with the app context; a request running inside
        # an outer app context (tests, CLI) must not leave its transaction and locks behind
        # for the next one, whose hot path runs on a connection of its own.
        db.session.remove()

    @app.after_request
    def return_request_id(response):
        if getattr(g, "request_id", None):
            response.headers["X-Request-ID"] = g.request_id
        return response

    return app
