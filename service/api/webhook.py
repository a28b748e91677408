"""POST /webhook/: the three conversation events."""

from flask import current_app, request
from flask.views import MethodView
from werkzeug.exceptions import Unauthorized

from marshmallow import ValidationError

from service.api.body import parse_json, read_body
from service.api.errors import Blueprint, abort, docs_only
from service.api.schemas import (
    AcceptedSchema,
    CloseConversationEventSchema,
    ConversationSchema,
    NewConversationEventSchema,
    NewMessageEventSchema,
    load_event,
)
from service.api.signatures import check_signature
from service.infra import metrics
from service.pipeline.intake import accept_message
from service.pipeline.lifecycle import close_conversation, create_conversation

blp = Blueprint(
    "webhook",
    __name__,
    url_prefix="/webhook",
    description="Conversation events from the WhatsApp support platform.",
)

EXAMPLES = {
    "NEW_CONVERSATION": {
        "type": "NEW_CONVERSATION",
        "timestamp": "2025-06-04T14:20:00Z",
        "data": {"id": "6a41b347-8d80-4ce9-84ba-7af66f369f6a"},
    },
    "NEW_MESSAGE": {
        "type": "NEW_MESSAGE",
        "timestamp": "2025-06-04T14:20:05Z",
        "data": {
            "id": "49108c71-4dca-4af3-9f32-61bc745926e2",
            "content": "Olá, quero informações sobre alugar um apartamento.",
            "conversation_id": "6a41b347-8d80-4ce9-84ba-7af66f369f6a",
        },
    },
    "CLOSE_CONVERSATION": {
        "type": "CLOSE_CONVERSATION",
        "timestamp": "2025-06-04T14:25:00Z",
        "data": {"id": "6a41b347-8d80-4ce9-84ba-7af66f369f6a"},
    },
}

REQUEST_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "oneOf": [
                    {"$ref": "#/components/schemas/NewConversationEvent"},
                    {"$ref": "#/components/schemas/NewMessageEvent"},
                    {"$ref": "#/components/schemas/CloseConversationEvent"},
                ],
                "discriminator": {"propertyName": "type"},
            },
            "examples": {name: {"value": value} for name, value in EXAMPLES.items()},
        }
    },
}


def register_event_schemas(spec):
    """Name the event schemas in the OpenAPI document so the request body can refer to them."""
    spec.components.schema("NewConversationEvent", schema=NewConversationEventSchema)
    spec.components.schema("NewMessageEvent", schema=NewMessageEventSchema)
    spec.components.schema("CloseConversationEvent", schema=CloseConversationEventSchema)


def read_json_body():
    """The request body as a JSON value, or an HTTP error that changes nothing: 415 unless
    declared as JSON, then the errors of service.api.body (413, 415, 400) and 401 for a
    wrong signature.

    The signature may cover the decoded body (the JSON the sender serialized) or, for a
    compressed body, the bytes as sent: senders that compress sign the JSON before
    compressing, and a signature over what was on the wire proves the same content.
    """
    if request.mimetype != "application/json" and not request.mimetype.endswith("+json"):
        abort(415, "unsupported_media_type", "Send the event as application/json.")
    wire, decoded = read_body(current_app.config["MAX_CONTENT_LENGTH"])
    try:
        check_signature(decoded)
    except Unauthorized:
        if wire is decoded:
            raise
        check_signature(wire)
    return parse_json(decoded)


@blp.route("/", strict_slashes=False)
class Webhook(MethodView):
    @docs_only(
        blp.doc(requestBody=REQUEST_BODY),
        blp.alt_response(
            201, schema=ConversationSchema, description="Conversation created", success=True
        ),
        blp.alt_response(
            202, schema=AcceptedSchema, description="Message accepted or held", success=True
        ),
        blp.alt_response(
            200, schema=ConversationSchema, description="Conversation closed", success=True
        ),
        blp.alt_response(
            400,
            description="Invalid event or a business rule refused it: `invalid_json`,"
            " `json_too_deep`, `invalid_encoding` (corrupt gzip or deflate data),"
            " `invalid_event` or the rule's code",
        ),
        blp.alt_response(401, description="Missing or wrong signature (only when a secret is set)"),
        blp.alt_response(
            413,
            description="`payload_too_large`: body over the size limit, whether sent with"
            " Content-Length or chunked, counted after decoding a Content-Encoding",
        ),
        blp.alt_response(
            415,
            description="`unsupported_media_type`: body not declared as JSON;"
            " `unsupported_encoding`: a Content-Encoding other than gzip, deflate or identity",
        ),
        blp.alt_response(503, description="Database or Redis unavailable; retry after Retry-After"),
    )
    def post(self):
        """Receive one conversation event."""
        payload = read_json_body()
        try:
            event = load_event(payload, current_app.config["MAX_MESSAGE_CHARS"])
        except ValidationError as err:
            metrics.EVENTS.labels(_type_label(payload), "invalid").inc()
            abort(400, "invalid_event", "The event is not valid.", errors=err.messages)
        kind, data = event["type"], event["data"]
        try:
            body, status = _dispatch(kind, data, event["timestamp"])
        except Exception as exc:
            metrics.EVENTS.labels(kind, getattr(exc, "error", "error")).inc()
            raise
        metrics.EVENTS.labels(kind, "ok").inc()
        return body, status


CONVERSATION = ConversationSchema()
ACCEPTED = AcceptedSchema()


def _dispatch(kind, data, timestamp):
    if kind == "NEW_CONVERSATION":
        return CONVERSATION.dump(create_conversation(data["id"])), 201
    if kind == "CLOSE_CONVERSATION":
        return CONVERSATION.dump(close_conversation(data["id"])), 200
    outcome = accept_message(
        data["id"], data["conversation_id"], data["content"], timestamp, data["direction"]
    )
    return ACCEPTED.dump(outcome.__dict__), 202


def _type_label(payload):
    kind = payload.get("type") if isinstance(payload, dict) else None
    return kind if isinstance(kind, str) and kind in EXAMPLES else "unknown"
