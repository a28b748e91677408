"""NEW_CONVERSATION and CLOSE_CONVERSATION: open a conversation (held messages join it) and
close it (its open group is answered first, so a closed conversation never changes again)."""

import logging

from sqlalchemy import insert, update

from service.domain import clock
from service.domain.clock import to_datetime
from service.domain.rules import CLOSED, OPEN, Rejected, check_can_close
from service.extensions import db, redis_client
from service.infra.database import commit_or_rollback, insert_or_reject
from service.infra.models import Conversation
from service.infra.notices import publish
from service.pipeline.groups import reply_buffer
from service.pipeline.holds import after_joined, buffer_joined, join_held
from service.pipeline.replies import announce_reply, answer_groups, lock_conversation, reply_fields

log = logging.getLogger(__name__)


def create_conversation(conversation_id):
    """Open a conversation and let the messages held for it join it.

    Returns the Conversation. Raises Rejected (conversation_exists) for a known id, or the
    database's or Redis's error (503) with nothing created.
    """
    now = clock.now_us()
    moment = to_datetime(now)
    insert_or_reject(
        insert(Conversation).values(
            id=conversation_id, status=OPEN, created_at=moment, updated_at=moment
        ),
        Rejected("conversation_exists", "A conversation with this id already exists."),
    )
    joined, _ = join_held(conversation_id, created_us=now, now=now)
    added = buffer_joined(conversation_id, joined)
    commit_or_rollback()
    log.info("create_conversation", extra={"conversation_id": str(conversation_id)})
    publish(redis_client.client, "conversation.created", conversation_id=conversation_id, at=moment)
    after_joined(conversation_id, joined, added)
    return db.session.get(Conversation, conversation_id)


def close_conversation(conversation_id):
    """Answer every unanswered group now (the open one included), then close the conversation.

    Returns the Conversation. Raises Rejected (conversation_not_found, conversation_closed),
    or the database's error (503) with nothing changed.
    """
    check_can_close(lock_conversation(conversation_id))
    # Read after the lock, which waited for every message being accepted: the replies and
    # the close are recorded after the messages they answer.
    now = clock.now_us()
    answers = answer_groups([conversation_id], now, final=True)[conversation_id]
    db.session.execute(
        update(Conversation)
        .where(Conversation.id == conversation_id)
        .values(status=CLOSED, updated_at=to_datetime(now))
    )
    commit_or_rollback()
    try:
        reply_buffer().discard(conversation_id)
    except Exception as exc:  # the buffer expires on its own; the database is closed
        log.warning("buffer_discard_failed", extra={"reason": str(exc)})
    extra = {"conversation_id": str(conversation_id)}
    for answer in answers:
        announce_reply(conversation_id, answer, "close", now)
    if answers:
        extra["replies"] = [reply_fields(answer) for answer in answers]
    log.info("close_conversation", extra=extra)
    publish(
        redis_client.client,
        "conversation.closed",
        conversation_id=conversation_id,
        at=to_datetime(now),
    )
    return db.session.get(Conversation, conversation_id)
