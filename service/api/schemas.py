"""Marshmallow schemas: webhook events in, conversations and deliveries out."""

import re
import uuid
from datetime import UTC, datetime

import marshmallow as ma
from marshmallow import EXCLUDE, ValidationError, fields, validate

from service.domain.delivery import STATUSES as DELIVERY_STATUSES
from service.domain.generation import STATUSES as GENERATION_STATUSES
from service.domain.rules import CLOSED, EXPIRED, HELD, INBOUND, OPEN, OUTBOUND, RECEIVED, SENT

EVENT_TYPES = ("NEW_CONVERSATION", "NEW_MESSAGE", "CLOSE_CONVERSATION")


class Schema(ma.Schema):
    """Senders add fields over time: unknown ones are ignored, never an error."""

    class Meta:
        unknown = EXCLUDE


# ISO-8601 extended calendar date and time, as senders write it: `T` (or RFC 3339's `t`),
# seconds optional (Java omits them when zero), a fraction of any length after `.` or `,`
# (Go writes nanoseconds; microseconds are kept, the rest truncated), then `Z`, `+hh:mm`,
# `+hhmm`, `+hh` (or `-`) or nothing. `datetime.fromisoformat` alone is not the check: on
# Python 3.11 it stops at a NUL and also takes week dates, basic format and a bare date.
ISO_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]+)?)?"
    r"(?:[Zz]|[+-](?:[01][0-9]|2[0-3])(?::?[0-5][0-9])?)?"
)

# The UUID forms Python's documentation lists, any case: canonical 8-4-4-4-12, 32 hex digits,
# either one braced or after `urn:uuid:`. `uuid.UUID` alone takes more by accident of `int()`
# (a sign, spaces, underscores, `0x`, hyphens anywhere), some of which name another id.
_HEX_UUID = (
    r"(?:[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
    r"|[0-9A-Fa-f]{32})"
)
UUID_FORMS = rf"(?:urn:uuid:)?{_HEX_UUID}|\{{{_HEX_UUID}\}}"
_UUID = re.compile(UUID_FORMS)

# C0 and C1 control characters: NUL cannot go into a PostgreSQL string, and none of them
# belongs in a query parameter.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def parse_timestamp(text):
    """The aware UTC datetime of an ISO-8601 timestamp (ISO_TIMESTAMP; no offset means UTC,
    SPEC "Events in"); ValueError for anything else, including a UTC value outside years
    1-9999."""
    if not isinstance(text, str) or not ISO_TIMESTAMP.fullmatch(text):
        raise ValueError("not an ISO-8601 timestamp")
    moment = datetime.fromisoformat(text.upper())
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # e.g. year 1 with a positive offset
        raise ValueError("outside years 1-9999 in UTC") from None


def parse_uuid(text):
    """The uuid.UUID of an id in one of UUID_FORMS; ValueError otherwise. Every id the service
    reads, in a body, a path or a query, goes through this one function."""
    if not isinstance(text, str) or not _UUID.fullmatch(text):
        raise ValueError("not a UUID")
    return uuid.UUID(text)


class Timestamp(fields.AwareDateTime):
    """ISO-8601, with or without offset or fraction of a second; no offset means UTC."""

    def __init__(self, **kwargs):
        super().__init__(format="iso", default_timezone=UTC, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        try:
            return parse_timestamp(value)
        except ValueError:
            raise self.make_error("invalid", input=value, obj_type="datetime") from None


class Id(fields.UUID):
    """A UUID in one of UUID_FORMS, loaded canonical."""

    def _validated(self, value):
        try:
            return parse_uuid(value)
        except ValueError:
            raise self.make_error("invalid_uuid") from None


class QueryText(fields.String):
    """A text query parameter: no control character (a NUL would reach PostgreSQL)."""

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        if _CONTROL.search(text):
            raise ValidationError("Must not contain control characters.")
        return text


def storable_text(value):
    """Text PostgreSQL can store: no NUL character, no unpaired surrogate."""
    if "\x00" in value:
        raise ValidationError("Must not contain the NUL character.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("Must be valid Unicode text (no unpaired surrogates).") from None


class ConversationRefSchema(Schema):
    id = Id(
        required=True,
        metadata={
            "example": "6a41b347-8d80-4ce9-84ba-7af66f369f6a",
            "description": "The conversation's id. NEW_CONVERSATION accepts an id once (then"
            " 400 conversation_exists): to try it again, use a new UUID here and in the messages.",
        },
    )


class NewMessageDataSchema(Schema):
    id = Id(
        required=True,
        metadata={
            "example": "49108c71-4dca-4af3-9f32-61bc745926e2",
            "description": "Accepted once (then 400 duplicate_message): put a new UUID here to"
            " try it again.",
        },
    )
    conversation_id = Id(
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
    timestamp = Timestamp(
        required=True,
        metadata={
            "description": "ISO-8601 date and time (`T`, seconds and fraction optional), "
            "offset `Z`, `+hh:mm`, `+hhmm`, `+hh` or none (UTC); nothing else around it",
            "example": "2025-06-04T14:20:05Z",
        },
    )


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


class AttemptsSchema(Schema):
    """The attempts of an outbound call (a delivery, or a call to the generator)."""

    attempts = fields.Integer(required=True, metadata={"description": "Attempts made so far"})
    next_attempt_at = fields.AwareDateTime(
        required=True, format="iso", allow_none=True, metadata={"description": "While pending"}
    )
    last_attempt_at = fields.AwareDateTime(required=True, format="iso", allow_none=True)
    last_status = fields.Integer(
        required=True,
        allow_none=True,
        metadata={"description": "HTTP status of the last attempt; null when none answered"},
    )
    last_error = fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "Why the last attempt failed", "example": "HTTP 503"},
    )


class DeliveryStateSchema(AttemptsSchema):
    """Where a reply's delivery to REPLY_WEBHOOK_URL stands."""

    status = fields.String(
        required=True,
        validate=validate.OneOf(DELIVERY_STATUSES),
        metadata={
            "description": "pending: to be sent or retried; delivered: the receiver answered "
            "2xx; dead: given up (a 4xx other than 408/429, or past the retry window) until "
            "an operator retries it"
        },
    )
    delivered_at = fields.AwareDateTime(required=True, format="iso", allow_none=True)


class MessageSchema(Schema):
    id = fields.UUID(required=True)
    type = fields.String(required=True, validate=validate.OneOf([INBOUND, OUTBOUND]))
    content = fields.String(required=True)
    timestamp = fields.AwareDateTime(required=True, format="iso")
    delivery = fields.Nested(
        DeliveryStateSchema,
        allow_none=True,
        metadata={
            "description": "OUTBOUND messages only, when delivery is on (REPLY_WEBHOOK_URL) or "
            "the reply has a delivery record; null for a reply without one (stored before "
            "delivery was on, or a SENT message)"
        },
    )


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
    q = QueryText(
        validate=validate.Length(min=1, max=36),
        metadata={
            "description": "Prefix of the conversation id, any case, hyphens optional; "
            "no control characters"
        },
    )
    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))
    cursor = QueryText(
        validate=validate.Length(max=200),
        metadata={"description": "next_cursor of the previous page, exactly as given"},
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
    conversation_id = Id(metadata={"description": "In any form the webhook takes"})
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


class DeliverySchema(DeliveryStateSchema):
    reply_id = fields.UUID(required=True, metadata={"description": "Also the webhook-id sent"})
    conversation_id = fields.UUID(required=True)
    created_at = fields.AwareDateTime(
        required=True, format="iso", metadata={"description": "When the reply was stored"}
    )


class DeliveryPageSchema(Schema):
    items = fields.List(fields.Nested(DeliverySchema), required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class DeliveryQueryArgsSchema(Schema):
    status = fields.String(validate=validate.OneOf(DELIVERY_STATUSES))
    conversation_id = Id(metadata={"description": "In any form the webhook takes"})
    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))
    cursor = QueryText(
        validate=validate.Length(max=200),
        metadata={"description": "next_cursor of the previous page, exactly as given"},
    )


class GenerationSchema(AttemptsSchema):
    """A closed group and its reply from REPLY_GENERATOR_URL."""

    reply_id = fields.UUID(
        required=True, metadata={"description": "The reply's id, also the Idempotency-Key sent"}
    )
    conversation_id = fields.UUID(required=True)
    status = fields.String(
        required=True,
        validate=validate.OneOf(GENERATION_STATUSES),
        metadata={
            "description": "pending: waiting for the generator (or its retry); stored: the "
            "reply is written (see source); failed: given up with REPLY_GENERATOR_FALLBACK=fail, "
            "until an operator retries it"
        },
    )
    source = fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "Who wrote the stored reply: generator, or template (fallback)"},
    )
    message_ids = fields.List(
        fields.UUID(), required=True, metadata={"description": "The group, in arrival order"}
    )
    created_at = fields.AwareDateTime(
        required=True, format="iso", metadata={"description": "When the group closed"}
    )
    stored_at = fields.AwareDateTime(required=True, format="iso", allow_none=True)


class GenerationPageSchema(Schema):
    items = fields.List(fields.Nested(GenerationSchema), required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class GenerationQueryArgsSchema(DeliveryQueryArgsSchema):
    status = fields.String(validate=validate.OneOf(GENERATION_STATUSES))


class StrictBoolean(fields.Boolean):
    """A JSON true or false, nothing that merely looks like one ("true", 1)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


class RetryDeadSchema(Schema):
    all_dead = StrictBoolean(
        required=True,
        validate=validate.Equal(True, error="Must be true: retry every dead delivery."),
        metadata={"description": "Must be true: every dead delivery goes back to pending"},
    )


class RetriedSchema(Schema):
    retried = fields.Integer(
        required=True, metadata={"description": "How many dead deliveries are pending again"}
    )


class RetryFailedSchema(Schema):
    all_failed = StrictBoolean(
        required=True,
        validate=validate.Equal(True, error="Must be true: retry every failed group."),
        metadata={"description": "Must be true: every failed group goes back to pending"},
    )


class RetriedGroupsSchema(Schema):
    retried = fields.Integer(
        required=True, metadata={"description": "How many failed groups are pending again"}
    )
