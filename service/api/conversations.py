"""Conversations out: one with its messages, a paginated list, its live activity, and the
held messages."""

import base64
import binascii
import uuid
from datetime import datetime

from flask.views import MethodView

from service.api.errors import Blueprint, abort
from service.api.schemas import (
    ActivitySchema,
    ConversationDetailSchema,
    ConversationPageSchema,
    ConversationQueryArgsSchema,
    HeldPageSchema,
    HeldQueryArgsSchema,
)
from service.pipeline import queries

blp = Blueprint(
    "conversations",
    __name__,
    url_prefix="/conversations",
    description="Conversations with their messages and automatic replies.",
)
held_blp = Blueprint(
    "held",
    __name__,
    url_prefix="/held",
    description="Messages that arrived before their conversation.",
)


def encode_cursor(after):
    """The opaque cursor of a page boundary: (created_at, id) of the page's last row."""
    created, ident = after
    raw = f"{created.isoformat()}|{ident}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def decode_cursor(cursor):
    """The (created_at, id) of a cursor this service gave out; 400 invalid_cursor otherwise."""
    try:
        created, ident = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        return datetime.fromisoformat(created), uuid.UUID(ident)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        abort(400, "invalid_cursor", "The cursor is not one this service gave out.")


@blp.route("/", strict_slashes=False)
class Conversations(MethodView):
    @blp.arguments(ConversationQueryArgsSchema, location="query")
    @blp.response(200, ConversationPageSchema)
    def get(self, args):
        """List conversations, newest first."""
        after = decode_cursor(args["cursor"]) if "cursor" in args else None
        items, next_after = queries.list_conversations(
            args.get("status"), args.get("q"), after, args["limit"]
        )
        return {"items": items, "next_cursor": encode_cursor(next_after) if next_after else None}


@blp.route("/<uuid:conversation_id>/", strict_slashes=False)
class ConversationById(MethodView):
    @blp.response(200, ConversationDetailSchema)
    @blp.alt_response(404, description="No conversation with this id")
    def get(self, conversation_id):
        """Show a conversation with its messages in the order they were recorded."""
        conversation = queries.get_conversation(conversation_id)
        if conversation is None:
            abort(404, "conversation_not_found", "No conversation with this id.")
        return conversation


@blp.route("/<uuid:conversation_id>/activity", strict_slashes=False)
class ConversationActivity(MethodView):
    @blp.response(200, ActivitySchema)
    def get(self, conversation_id):
        """Show the group waiting for its reply and the messages held for this id."""
        return queries.conversation_activity(conversation_id)


@held_blp.route("/", strict_slashes=False)
class HeldMessages(MethodView):
    @held_blp.arguments(HeldQueryArgsSchema, location="query")
    @held_blp.response(200, HeldPageSchema)
    def get(self, args):
        """List messages held for an unknown conversation, and the expired ones."""
        items = queries.list_held(args.get("status"), args.get("conversation_id"), args["limit"])
        return {"items": items}
