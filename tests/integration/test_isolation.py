"""Each test starts from empty tables and Redis, whatever the one before it committed.

The tests in this file run in order: the first commits, the second must see nothing.
"""

from sqlalchemy import func, select

from service.extensions import db
from service.infra.models import Conversation, HeldMessage, Message
from tests.helpers import new_conversation, new_id, new_message, post

CONVERSATION = "1b0c5a4e-7a0b-4b59-9d0e-6f1f7f6c0001"
MESSAGE = "1b0c5a4e-7a0b-4b59-9d0e-6f1f7f6c0002"


def counts():
    db.session.rollback()
    return tuple(
        db.session.execute(select(func.count()).select_from(model)).scalar_one()
        for model in (Conversation, Message, HeldMessage)
    )


def test_first_commits_rows_and_redis_keys(client, redis_conn):
    post(client, new_conversation(CONVERSATION), 201)
    post(client, new_message(MESSAGE, CONVERSATION), 202)
    post(client, new_message(new_id(), new_id()), 202)
    assert counts() == (1, 1, 1)
    assert redis_conn.dbsize() > 0


def test_second_sees_nothing(client, redis_conn):
    assert counts() == (0, 0, 0)
    assert redis_conn.dbsize() == 0
    assert client.get(f"/conversations/{CONVERSATION}/").status_code == 404
    # The same ids are free again.
    post(client, new_conversation(CONVERSATION), 201)
    post(client, new_message(MESSAGE, CONVERSATION), 202)
