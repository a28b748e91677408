"""Database models: plain records; the rules live in `service.domain`, the use cases in
`service.pipeline`."""

from datetime import UTC

from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    Uuid,
)
from sqlalchemy import DateTime as _DateTime
from sqlalchemy.orm import Mapped, mapped_column

from service.domain import generation
from service.domain.delivery import DEAD, DELIVERED, PENDING
from service.domain.rules import CLOSED, EXPIRED, HELD, INBOUND, OPEN, OUTBOUND
from service.extensions import db


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = _DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and dialect.name == "sqlite":
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Conversation(db.Model):
    __tablename__ = "conversations"
    __table_args__ = (
        CheckConstraint(f"status IN ('{OPEN}', '{CLOSED}')", name="status"),
        Index("ix_conversations_created_at_id", "created_at", "id"),
        Index("ix_conversations_status_created_at_id", "status", "created_at", "id"),
    )

    id: Mapped[Uuid] = mapped_column(Uuid, primary_key=True)
    status: Mapped[str] = mapped_column(String(6), nullable=False)
    created_at = mapped_column(UTCDateTime, nullable=False)
    updated_at = mapped_column(UTCDateTime, nullable=False)


class Message(db.Model):
    __tablename__ = "messages"
    __table_args__ = (
        CheckConstraint(f"type IN ('{INBOUND}', '{OUTBOUND}')", name="type"),
        CheckConstraint(f"reply_id IS NULL OR type = '{INBOUND}'", name="reply_only_inbound"),
        CheckConstraint("length(content) > 0", name="content_not_empty"),
        Index("ix_messages_conversation_id_received_at", "conversation_id", "received_at", "id"),
        # Inbound messages still waiting for their reply: what the reply pipeline reads.
        Index(
            "ix_messages_unanswered",
            "conversation_id",
            "received_at",
            postgresql_where=db.text(f"type = '{INBOUND}' AND reply_id IS NULL"),
            sqlite_where=db.text(f"type = '{INBOUND}' AND reply_id IS NULL"),
        ),
        Index("ix_messages_reply_id", "reply_id"),
    )

    id: Mapped[Uuid] = mapped_column(Uuid, primary_key=True)
    conversation_id = mapped_column(
        Uuid, ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False
    )
    type: Mapped[str] = mapped_column(String(8), nullable=False)
    content: Mapped[str] = mapped_column(Text, nullable=False)
    # The event's timestamp for received messages; the generation time for replies.
    timestamp = mapped_column(UTCDateTime, nullable=False)
    # The service's own arrival clock: grouping and ordering use it, never the sender's.
    received_at = mapped_column(UTCDateTime, nullable=False)
    # For an INBOUND message: the OUTBOUND reply that answers its group, set when the group
    # closes. Not a foreign key: with REPLY_GENERATOR_URL set the reply is written later,
    # once the generator answers (the `generations` row says where that stands).
    reply_id = mapped_column(Uuid, nullable=True)
    # True for replies the service generated, False for messages that came in as events.
    generated: Mapped[bool] = mapped_column(db.Boolean, nullable=False, default=False)


class HeldMessage(db.Model):
    """A message that arrived before its conversation: held, then joined or expired."""

    __tablename__ = "held_messages"
    __table_args__ = (
        CheckConstraint(f"status IN ('{HELD}', '{EXPIRED}')", name="status"),
        CheckConstraint(f"type IN ('{INBOUND}', '{OUTBOUND}')", name="type"),
        CheckConstraint("length(content) > 0", name="content_not_empty"),
        Index("ix_held_messages_conversation_id", "conversation_id"),
        Index("ix_held_messages_status_received_at", "status", "received_at"),
    )

    id: Mapped[Uuid] = mapped_column(Uuid, primary_key=True)
    conversation_id = mapped_column(Uuid, nullable=False)
    type: Mapped[str] = mapped_column(String(8), nullable=False)
    content: Mapped[str] = mapped_column(Text, nullable=False)
    timestamp = mapped_column(UTCDateTime, nullable=False)
    received_at = mapped_column(UTCDateTime, nullable=False)
    status: Mapped[str] = mapped_column(String(7), nullable=False)
    expired_at = mapped_column(UTCDateTime, nullable=True)


class Delivery(db.Model):
    """The outbox: one row per reply to POST to REPLY_WEBHOOK_URL, written in the reply's own
    transaction (service.pipeline.replies), worked by service.pipeline.deliveries."""

    __tablename__ = "deliveries"
    __table_args__ = (
        CheckConstraint(f"status IN ('{PENDING}', '{DELIVERED}', '{DEAD}')", name="status"),
        # What a delivery pass reads: the due ones, oldest due first.
        Index(
            "ix_deliveries_pending",
            "next_attempt_at",
            postgresql_where=db.text(f"status = '{PENDING}'"),
            sqlite_where=db.text(f"status = '{PENDING}'"),
        ),
        # A conversation's replies in order (its deliveries listed)...
        Index(
            "ix_deliveries_conversation_id_created_at", "conversation_id", "created_at", "reply_id"
        ),
        # ...and its pending ones alone: a reply waits for the ones before it, and that check
        # must not walk every delivered reply of a long conversation.
        Index(
            "ix_deliveries_pending_by_conversation",
            "conversation_id",
            "created_at",
            "reply_id",
            postgresql_where=db.text(f"status = '{PENDING}'"),
            sqlite_where=db.text(f"status = '{PENDING}'"),
        ),
        Index("ix_deliveries_status", "status"),
    )

    reply_id = mapped_column(Uuid, ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True)
    conversation_id = mapped_column(
        Uuid, ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False
    )
    status: Mapped[str] = mapped_column(String(9), nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # The reply's received_at: orders a conversation's replies.
    created_at = mapped_column(UTCDateTime, nullable=False)
    # Start of the retry window: created_at, then the time of the last operator retry.
    retry_from = mapped_column(UTCDateTime, nullable=False)
    # Due time while pending; NULL once delivered or dead.
    next_attempt_at = mapped_column(UTCDateTime, nullable=True)
    # A worker's claim on the attempt in flight; a later pass may take it once it has passed.
    leased_until = mapped_column(UTCDateTime, nullable=True)
    last_attempt_at = mapped_column(UTCDateTime, nullable=True)
    # The HTTP status of the last attempt; NULL when the receiver did not answer.
    last_status = mapped_column(Integer, nullable=True)
    last_error = mapped_column(Text, nullable=True)
    delivered_at = mapped_column(UTCDateTime, nullable=True)


_GENERATION_PENDING = db.text(f"status = '{generation.PENDING}'")
_GENERATION_STATUSES = "', '".join(generation.STATUSES)
_GENERATION_SOURCES = "', '".join(generation.SOURCES)


class Generation(db.Model):
    """A closed group waiting for (or given) its reply from REPLY_GENERATOR_URL: written when
    the group closes, with its messages linked to `reply_id` (service.pipeline.replies),
    worked by service.pipeline.generations."""

    __tablename__ = "generations"
    __table_args__ = (
        CheckConstraint(f"status IN ('{_GENERATION_STATUSES}')", name="status"),
        CheckConstraint(f"source IS NULL OR source IN ('{_GENERATION_SOURCES}')", name="source"),
        Index(
            "ix_generations_pending",
            "next_attempt_at",
            postgresql_where=_GENERATION_PENDING,
            sqlite_where=_GENERATION_PENDING,
        ),
        Index(
            "ix_generations_conversation_id_created_at",
            "conversation_id",
            "created_at",
            "reply_id",
        ),
        # A group waits for the ones before it in its conversation (replies in group order).
        Index(
            "ix_generations_pending_by_conversation",
            "conversation_id",
            "created_at",
            "reply_id",
            postgresql_where=_GENERATION_PENDING,
            sqlite_where=_GENERATION_PENDING,
        ),
        Index("ix_generations_status", "status"),
    )

    # The id the reply will have (and the idempotency key of every call for it).
    reply_id = mapped_column(Uuid, primary_key=True)
    conversation_id = mapped_column(
        Uuid, ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False
    )
    status: Mapped[str] = mapped_column(String(7), nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # When the group closed: orders a conversation's groups.
    created_at = mapped_column(UTCDateTime, nullable=False)
    next_attempt_at = mapped_column(UTCDateTime, nullable=True)
    leased_until = mapped_column(UTCDateTime, nullable=True)
    last_attempt_at = mapped_column(UTCDateTime, nullable=True)
    last_status = mapped_column(Integer, nullable=True)
    last_error = mapped_column(Text, nullable=True)
    # Who wrote the stored reply: "generator" or "template" (the fallback).
    source = mapped_column(String(9), nullable=True)
    stored_at = mapped_column(UTCDateTime, nullable=True)
