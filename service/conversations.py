"""Conversations out: one with its messages, a paginated list, and its live activity."""

import base64
import binascii
import uuid
from datetime import datetime

from sqlalchemy import and_, func, or_, select

from flask.views import MethodView

from service import events
from service.api import Blueprint, abort
from service.clock import to_datetime, to_us
from service.extensions import db
from service.models import Conversation, HeldMessage, Message
from service.schemas import (
    ActivitySchema,
    ConversationDetailSchema,
    ConversationPageSchema,
    ConversationQueryArgsSchema,
    HeldPageSchema,
    HeldQueryArgsSchema,
)

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


def encode_cursor(conversation):
    raw = f"{conversation.created_at.isoformat()}|{conversation.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def decode_cursor(cursor):
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
        counts = (
            select(
                Message.conversation_id,
                func.count().label("message_count"),
                func.max(Message.received_at).label("last_message_at"),
            )
            .group_by(Message.conversation_id)
            .subquery()
        )
        query = select(Conversation, counts.c.message_count, counts.c.last_message_at).outerjoin(
            counts, counts.c.conversation_id == Conversation.id
        )
        if "status" in args:
            query = query.where(Conversation.status == args["status"])
        if "q" in args:
            # Compared without dashes: SQLite stores a UUID as 32 hex digits, PostgreSQL shows 36.
            prefix = args["q"].lower().replace("%", "").replace("_", "").replace("-", "")
            as_text = func.lower(func.cast(Conversation.id, db.String))
            query = query.where(func.replace(as_text, "-", "").like(f"{prefix}%"))
        if "cursor" in args:
            created, ident = decode_cursor(args["cursor"])
            query = query.where(
                or_(
                    Conversation.created_at < created,
                    and_(Conversation.created_at == created, Conversation.id < ident),
                )
            )
        limit = args["limit"]
        rows = db.session.execute(
            query.order_by(Conversation.created_at.desc(), Conversation.id.desc()).limit(limit + 1)
        ).all()
        items = [
            {
                "id": c.id,
                "status": c.status,
                "created_at": c.created_at,
                "updated_at": c.updated_at,
                "message_count": count or 0,
                "last_message_at": last,
            }
            for c, count, last in rows[:limit]
        ]
        more = len(rows) > limit
        return {"items": items, "next_cursor": encode_cursor(rows[limit - 1][0]) if more else None}


def get_conversation_or_404(conversation_id):
    conversation = db.session.get(Conversation, conversation_id)
    if conversation is None:
        abort(404, "conversation_not_found", "No conversation with this id.")
    return conversation


@blp.route("/<uuid:conversation_id>/", strict_slashes=False)
class ConversationById(MethodView):
    @blp.response(200, ConversationDetailSchema)
    @blp.alt_response(404, description="No conversation with this id")
    def get(self, conversation_id):
        """Show a conversation with its messages in the order they were recorded."""
        conversation = get_conversation_or_404(conversation_id)
        messages = db.session.execute(
            select(Message)
            .where(Message.conversation_id == conversation_id)
            .order_by(Message.received_at, Message.id)
        ).scalars()
        return {
            "id": conversation.id,
            "status": conversation.status,
            "created_at": conversation.created_at,
            "updated_at": conversation.updated_at,
            "messages": list(messages),
        }


def held_view(held, hold_us):
    return {
        "id": held.id,
        "conversation_id": held.conversation_id,
        "content": held.content,
        "received_at": held.received_at,
        "expires_at": to_datetime(to_us(held.received_at) + hold_us),
        "status": held.status,
        "expired_at": held.expired_at,
    }


def list_held(status=None, conversation_id=None, limit=100):
    """Held and expired messages, newest first."""
    query = select(HeldMessage)
    if status:
        query = query.where(HeldMessage.status == status)
    if conversation_id:
        query = query.where(HeldMessage.conversation_id == conversation_id)
    rows = db.session.execute(
        query.order_by(HeldMessage.received_at.desc(), HeldMessage.id).limit(limit)
    ).scalars()
    hold = events.hold_us()
    return [held_view(h, hold) for h in rows]


@blp.route("/<uuid:conversation_id>/activity", strict_slashes=False)
class ConversationActivity(MethodView):
    @blp.response(200, ActivitySchema)
    def get(self, conversation_id):
        """Show the group waiting for its reply and the messages held for this id."""
        pending = events.reply_buffer().pending(conversation_id)
        answered = set()
        if pending:
            answered = set(
                db.session.execute(
                    select(Message.id).where(
                        Message.id.in_([uuid.UUID(m) for m, _ in pending]),
                        Message.reply_id.is_not(None),
                    )
                ).scalars()
            )
        waiting = [(m, at) for m, at in pending if uuid.UUID(m) not in answered]
        group = None
        if waiting:
            newest = max(at for _, at in waiting)
            group = {
                "message_ids": [m for m, _ in waiting],
                "last_arrival_at": to_datetime(newest),
                "reply_due_at": to_datetime(newest + events.quiet_us()),
            }
        return {
            "conversation_id": conversation_id,
            "group": group,
            "held": list_held(conversation_id=conversation_id),
        }


@held_blp.route("/", strict_slashes=False)
class HeldMessages(MethodView):
    @held_blp.arguments(HeldQueryArgsSchema, location="query")
    @held_blp.response(200, HeldPageSchema)
    def get(self, args):
        """List messages held for an unknown conversation, and the expired ones."""
        return {"items": list_held(args.get("status"), args.get("conversation_id"), args["limit"])}
