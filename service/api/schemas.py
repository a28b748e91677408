"""Marshmallow schemas: webhook events in, conversations out."""

from datetime import UTC

import marshmallow as ma
from marshmallow import EXCLUDE, ValidationError, fields, validate

from service.domain.rules import CLOSED, EXPIRED, HELD, INBOUND, OPEN, OUTBOUND, RECEIVED, SENT

EVENT_TYPES = ("NEW_CONVERSATION", "NEW_MESSAGE", "CLOSE_CONVERSATION")


class Schema(ma.Schema):
    """Senders add fields over time: unknown ones are ignored, never an error."""

    class Meta:
        unknown = EXCLUDE


class Timestamp(fields.AwareDateTime):
    """ISO-8601, with or without offset or microseconds; no offset means UTC."""

    def __init__(self, **kwargs):
        super().__init__(format="iso", default_timezone=UTC, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        moment = super()._deserialize(value, attr, data, **kwargs)
        try:
            return moment.astimezone(UTC)
        except OverflowError:  # e.g. year 1 with a positive offset
            raise self.make_error("invalid", obj_type="datetime") from None


def storable_text(value):
    """Text PostgreSQL can store: no NUL character, no unpaired surrogate."""
    if "\x00" in value:
        raise ValidationError("Must not contain the NUL character.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("Must be valid Unicode text (no unpaired surrogates).") from None


class ConversationRefSchema(Schema):
    id = fields.UUID(required=True, metadata={"example": "6a41b347-8d80-4ce9-84ba-7af66f369f6a"})


class NewMessageDataSchema(Schema):
    id = fields.UUID(required=True, metadata={"example": "49108c71-4dca-4af3-9f32-61bc745926e2"})
    conversation_id = fields.UUID(
        required=True, metadata={"example": "6a41b347-8d80-4ce9-84ba-7af66f369f6a"}
    )
    content = fields.String(
        required=True,
        validate=[validate.Length(min=1), storable_text],
        metadata={
            "description": "Message text, 1 to MAX_MESSAGE_CHARS (4096) characters",
            "example": "Olá, quero informações sobre alugar um apartamento.",
        },
    )
    direction = fields.String(
        load_default=RECEIVED,
        validate=validate.OneOf([RECEIVED, SENT]),
        metadata={"description": "RECEIVED (a customer's message, the default) or SENT"},
    )


class _EventSchema(Schema):
    timestamp = Timestamp(required=True, metadata={"example": "2025-06-04T14:20:05Z"})


class NewConversationEventSchema(_EventSchema):
    type = fields.String(required=True, validate=validate.Equal("NEW_CONVERSATION"))
    data = fields.Nested(ConversationRefSchema, required=True)


class NewMessageEventSchema(_EventSchema):
    type = fields.String(required=True, validate=validate.Equal("NEW_MESSAGE"))
    data = fields.Nested(NewMessageDataSchema, required=True)


class CloseConversationEventSchema(_EventSchema):
    type = fields.String(required=True, validate=validate.Equal("CLOSE_CONVERSATION"))
    data = fields.Nested(ConversationRefSchema, required=True)


EVENT_SCHEMAS = {
    "NEW_CONVERSATION": NewConversationEventSchema(),
    "NEW_MESSAGE": NewMessageEventSchema(),
    "CLOSE_CONVERSATION": CloseConversationEventSchema(),
}


def load_event(payload, max_message_chars):
    """Validate a decoded webhook body; raise ValidationError with field messages."""
    if not isinstance(payload, dict):
        raise ValidationError({"_schema": ["The body must be a JSON object."]})
    kind = payload.get("type")
    if not isinstance(kind, str) or kind not in EVENT_SCHEMAS:
        raise ValidationError({"type": [f"Must be one of: {', '.join(EVENT_TYPES)}."]})
    event = EVENT_SCHEMAS[kind].load(payload)
    content = event["data"].get("content")
    if content is not None and len(content) > max_message_chars:
        raise ValidationError(
            {"data": {"content": [f"Longer than {max_message_chars} characters."]}}
        )
    return event


class MessageSchema(Schema):
    id = fields.UUID(required=True)
    type = fields.String(required=True, validate=validate.OneOf([INBOUND, OUTBOUND]))
    content = fields.String(required=True)
    timestamp = fields.AwareDateTime(required=True, format="iso")


class ConversationSchema(Schema):
    id = fields.UUID(required=True)
    status = fields.String(required=True, validate=validate.OneOf([OPEN, CLOSED]))
    created_at = fields.AwareDateTime(required=True, format="iso")
    updated_at = fields.AwareDateTime(required=True, format="iso")


class ConversationDetailSchema(ConversationSchema):
    messages = fields.List(fields.Nested(MessageSchema), required=True)


class ConversationSummarySchema(ConversationSchema):
    message_count = fields.Integer(required=True)
    last_message_at = fields.AwareDateTime(required=True, format="iso", allow_none=True)


class ConversationPageSchema(Schema):
    items = fields.List(fields.Nested(ConversationSummarySchema), required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class ConversationQueryArgsSchema(Schema):
    status = fields.String(validate=validate.OneOf([OPEN, CLOSED]))
    q = fields.String(
        validate=validate.Length(min=1, max=36),
        metadata={"description": "Prefix of the conversation id"},
    )
    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))
    cursor = fields.String(
        validate=validate.Length(max=200),
        metadata={"description": "next_cursor of the previous page"},
    )


class AcceptedSchema(Schema):
    status = fields.String(
        required=True,
        validate=validate.OneOf(["accepted", "held"]),
        metadata={"description": "accepted: stored; held: waiting for its conversation"},
    )
    message_id = fields.UUID(required=True)
    conversation_id = fields.UUID(required=True)
    reply_due_at = fields.AwareDateTime(
        format="iso",
        allow_none=True,
        metadata={"description": "Earliest time of the automatic reply, if no message follows"},
    )


class HeldMessageSchema(Schema):
    id = fields.UUID(required=True)
    conversation_id = fields.UUID(required=True)
    content = fields.String(required=True)
    received_at = fields.AwareDateTime(required=True, format="iso")
    expires_at = fields.AwareDateTime(required=True, format="iso")
    status = fields.String(required=True, validate=validate.OneOf([HELD, EXPIRED]))
    expired_at = fields.AwareDateTime(format="iso", allow_none=True)


class HeldQueryArgsSchema(Schema):
    status = fields.String(validate=validate.OneOf([HELD, EXPIRED]))
    conversation_id = fields.UUID()
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))


class HeldPageSchema(Schema):
    items = fields.List(fields.Nested(HeldMessageSchema), required=True)


class GroupSchema(Schema):
    message_ids = fields.List(fields.UUID(), required=True)
    last_arrival_at = fields.AwareDateTime(required=True, format="iso")
    reply_due_at = fields.AwareDateTime(required=True, format="iso")


class ActivitySchema(Schema):
    conversation_id = fields.UUID(required=True)
    group = fields.Nested(GroupSchema, required=True, allow_none=True)
    held = fields.List(fields.Nested(HeldMessageSchema), required=True)
