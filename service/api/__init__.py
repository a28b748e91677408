"""HTTP: the flask-smorest API, the operators' endpoints, the live stream and the console.

Lives here: blueprints and their views, marshmallow schemas of requests and responses, the
webhook signature check, the read tokens (`access`), the one error path (`errors`), Swagger
UI. A view parses, calls one use case of `service.pipeline`, and renders; it holds no
business rule and no transaction.
May import: `service.pipeline`, `service.infra`, `service.domain`, `service.extensions`,
`service.config` and Flask, flask-smorest, marshmallow. Never `service.jobs` or
`service.cli` (tests/unit/test_layers.py).
"""

from service.api.access import BearerSecurityPlugin
from service.api.errors import Api

api = Api(spec_kwargs={"extra_plugins": [BearerSecurityPlugin()]})


def init_app(app):
    """Bind the API to the app and register every blueprint."""
    from service.api import (
        access,
        conversations,
        deliveries,
        generations,
        live,
        ops,
        swagger,
        webhook,
    )

    # The reads show customers' messages: behind API_TOKEN when set (service.api.access).
    # So do the deliveries and the generations, with their retries (the only writes besides the
    # webhook).
    access.protect(conversations.blp, conversations.held_blp, deliveries.blp, generations.blp)
    api.init_app(app)
    # Before any blueprint: a rule looks its converters up as it is registered.
    app.url_map.converters["id"] = conversations.IdConverter
    webhook.register_event_schemas(api.spec)
    api.register_blueprint(webhook.blp)
    api.register_blueprint(conversations.blp)
    api.register_blueprint(conversations.held_blp)
    api.register_blueprint(deliveries.blp)
    api.register_blueprint(generations.blp)
    swagger.init_app(app)
    ops.init_app(app)
    live.init_app(app)
