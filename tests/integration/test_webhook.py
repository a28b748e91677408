"""POST /webhook/ through HTTP on PostgreSQL: every row of SPEC's status table."""

import json
import threading

import pytest
from sqlalchemy import func, select

from service.extensions import db
from service.infra.models import Conversation, HeldMessage, Message
from tests.helpers import (
    close_conversation,
    messages,
    new_conversation,
    new_id,
    new_message,
    open_conversation,
    post,
)

SEED_CONVERSATION = "6a41b347-8d80-4ce9-84ba-7af66f369f6a"
SEED_MESSAGE = "49108c71-4dca-4af3-9f32-61bc745926e2"


def count(model):
    return db.session.execute(select(func.count()).select_from(model)).scalar_one()


def snapshot():
    """Row counts of every table: what 'changes nothing' is checked against."""
    db.session.rollback()
    return count(Conversation), count(Message), count(HeldMessage)


def test_seed_flow(client):
    response = post(client, new_conversation(SEED_CONVERSATION), 201)
    body = response.get_json()
    assert body["id"] == SEED_CONVERSATION
    assert body["status"] == "OPEN"
    assert body["created_at"].endswith("+00:00")

    response = post(
        client,
        new_message(
            SEED_MESSAGE, SEED_CONVERSATION, "Olá, quero informações sobre alugar um apartamento."
        ),
        202,
    )
    assert response.get_json()["status"] == "accepted"

    stored = messages(client, SEED_CONVERSATION)
    assert stored == [
        {
            "id": SEED_MESSAGE,
            "type": "INBOUND",
            "content": "Olá, quero informações sobre alugar um apartamento.",
            "timestamp": "2025-06-04T14:20:05+00:00",
        }
    ]

    response = post(client, close_conversation(SEED_CONVERSATION), 200)
    assert response.get_json()["status"] == "CLOSED"


def test_webhook_without_slash_is_not_redirected(client):
    response = client.post("/webhook", json=new_conversation(new_id()))
    assert response.status_code == 201


def test_new_conversation_twice_is_400_and_changes_nothing(client):
    conversation_id = open_conversation(client)
    before = snapshot()
    response = post(client, new_conversation(conversation_id), 400)
    assert response.get_json()["error"] == "conversation_exists"
    assert snapshot() == before


def test_ids_are_stored_canonical(client):
    conversation_id = new_id()
    post(client, new_conversation(conversation_id.upper()), 201)
    response = client.get(f"/conversations/{conversation_id}/")
    assert response.get_json()["id"] == conversation_id
    post(client, new_conversation(conversation_id), 400)


def test_message_to_closed_conversation_is_400(client):
    conversation_id = open_conversation(client)
    post(client, close_conversation(conversation_id), 200)
    before = snapshot()
    response = post(client, new_message(new_id(), conversation_id), 400)
    assert response.get_json()["error"] == "conversation_closed"
    assert snapshot() == before


def test_duplicate_message_is_400(client):
    conversation_id = open_conversation(client)
    message_id = new_id()
    post(client, new_message(message_id, conversation_id), 202)
    before = snapshot()
    response = post(client, new_message(message_id, conversation_id, "again"), 400)
    assert response.get_json()["error"] == "duplicate_message"
    assert snapshot() == before


def test_message_for_unknown_conversation_is_held(client):
    response = post(client, new_message(new_id(), new_id()), 202)
    assert response.get_json()["status"] == "held"
    assert snapshot() == (0, 0, 1)


def test_duplicate_of_held_message_is_400(client):
    message_id, conversation_id = new_id(), new_id()
    post(client, new_message(message_id, conversation_id), 202)
    response = post(client, new_message(message_id, conversation_id), 400)
    assert response.get_json()["error"] == "duplicate_message"


def test_close_unknown_conversation_is_400(client):
    response = post(client, close_conversation(new_id()), 400)
    assert response.get_json()["error"] == "conversation_not_found"


def test_close_twice_is_400(client):
    conversation_id = open_conversation(client)
    post(client, close_conversation(conversation_id), 200)
    before = snapshot()
    response = post(client, close_conversation(conversation_id), 400)
    assert response.get_json()["error"] == "conversation_closed"
    assert snapshot() == before


def test_sent_direction_is_stored_outbound_and_not_grouped(client, redis_conn):
    conversation_id = open_conversation(client)
    post(client, new_message(new_id(), conversation_id, "Tudo ótimo", direction="SENT"), 202)
    assert [m["type"] for m in messages(client, conversation_id)] == ["OUTBOUND"]
    assert redis_conn.keys("conv:*") == []


def test_extra_fields_are_ignored(client):
    event = new_conversation(new_id())
    event["source"] = "whatsapp"
    event["data"]["channel"] = "x"
    post(client, event, 201)


@pytest.mark.parametrize(
    "timestamp",
    [
        "2025-06-04T14:20:05Z",
        "2025-06-04T14:20:05",
        "2025-02-21T10:20:41.349308",
        "2025-06-04T11:20:05-03:00",
        "2025-06-04T14:20:05.123+00:00",
    ],
)
def test_timestamp_forms(client, timestamp):
    conversation_id = open_conversation(client)
    post(client, new_message(new_id(), conversation_id, timestamp=timestamp), 202)
    stored = messages(client, conversation_id)[0]["timestamp"]
    assert stored.endswith("+00:00")


def test_naive_timestamp_means_utc(client):
    conversation_id = open_conversation(client)
    post(client, new_message(new_id(), conversation_id, timestamp="2025-06-04T11:20:05-03:00"), 202)
    post(client, new_message(new_id(), conversation_id, timestamp="2025-06-04T14:20:05"), 202)
    stamps = {m["timestamp"] for m in messages(client, conversation_id)}
    assert stamps == {"2025-06-04T14:20:05+00:00"}


INVALID_BODIES = {
    "malformed json": b'{"type": "NEW_CONVERSATION",',
    "invalid utf-8": b'{"type": "NEW_CONVERSATION", "data": {"id": "\xff"}}',
    "array": b"[]",
    "null": b"null",
    "number": b"42",
    "string": b'"NEW_CONVERSATION"',
    "empty": b"",
    "deep nesting": b"[" * 100000 + b"]" * 100000,
}


@pytest.mark.parametrize("body", INVALID_BODIES.values(), ids=INVALID_BODIES.keys())
def test_invalid_bodies_are_400(client, body):
    before = snapshot()
    response = client.post("/webhook/", data=body, content_type="application/json")
    assert response.status_code == 400
    payload = response.get_json()
    assert payload["code"] == 400 and payload["status"] == "Bad Request" and payload["error"]
    assert snapshot() == before


def _conv(**data):
    return {"type": "NEW_CONVERSATION", "timestamp": "2025-06-04T14:20:00Z", "data": data}


def _msg(**data):
    base = {"id": new_id(), "conversation_id": new_id(), "content": "Oi"}
    base.update(data)
    return {"type": "NEW_MESSAGE", "timestamp": "2025-06-04T14:20:00Z", "data": base}


INVALID_EVENTS = {
    "unknown type": {
        "type": "DELETE_CONVERSATION",
        "timestamp": "2025-06-04T14:20:00Z",
        "data": {},
    },
    "type missing": {"timestamp": "2025-06-04T14:20:00Z", "data": {"id": new_id()}},
    "type not string": {"type": 1, "timestamp": "2025-06-04T14:20:00Z", "data": {"id": new_id()}},
    "timestamp missing": {"type": "NEW_CONVERSATION", "data": {"id": new_id()}},
    "timestamp garbage": {
        "type": "NEW_CONVERSATION",
        "timestamp": "yesterday",
        "data": {"id": new_id()},
    },
    "timestamp number": {
        "type": "NEW_CONVERSATION",
        "timestamp": 1717510800,
        "data": {"id": new_id()},
    },
    "timestamp bad month": {
        "type": "NEW_CONVERSATION",
        "timestamp": "2025-13-04T14:20:00Z",
        "data": {"id": new_id()},
    },
    "data missing": {"type": "NEW_CONVERSATION", "timestamp": "2025-06-04T14:20:00Z"},
    "data null": {"type": "NEW_CONVERSATION", "timestamp": "2025-06-04T14:20:00Z", "data": None},
    "data list": {"type": "NEW_CONVERSATION", "timestamp": "2025-06-04T14:20:00Z", "data": []},
    "id missing": _conv(),
    "id not uuid": _conv(id="6a41b347"),
    "id number": _conv(id=12),
    "id null": _conv(id=None),
    "message id bad": _msg(id="not-a-uuid"),
    "conversation id bad": _msg(conversation_id="x"),
    "content empty": _msg(content=""),
    "content missing": {
        "type": "NEW_MESSAGE",
        "timestamp": "2025-06-04T14:20:00Z",
        "data": {"id": new_id(), "conversation_id": new_id()},
    },
    "content number": _msg(content=5),
    "content null": _msg(content=None),
    "content too long": _msg(content="a" * 4097),
    "direction unknown": _msg(direction="SIDEWAYS"),
}


@pytest.mark.parametrize("event", INVALID_EVENTS.values(), ids=INVALID_EVENTS.keys())
def test_invalid_events_are_400(client, event):
    before = snapshot()
    response = post(client, event, 400)
    payload = response.get_json()
    assert payload["error"] == "invalid_event"
    assert payload["errors"]
    assert snapshot() == before


def test_content_at_the_limit_is_accepted(client):
    conversation_id = open_conversation(client)
    post(client, new_message(new_id(), conversation_id, "é" * 4096), 202)


def test_non_json_content_type_is_415(client):
    before = snapshot()
    body = json.dumps(new_conversation(new_id()))
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        response = client.post("/webhook/", data=body, content_type=content_type)
        assert response.status_code == 415
        assert response.get_json()["error"] == "unsupported_media_type"
    assert snapshot() == before


def test_json_with_charset_is_accepted(client):
    body = json.dumps(new_conversation(new_id()))
    response = client.post("/webhook/", data=body, content_type="application/json; charset=utf-8")
    assert response.status_code == 201


def test_body_over_limit_is_413(client):
    before = snapshot()
    body = json.dumps(_msg(content="a" * (1024 * 1024)))
    response = client.post("/webhook/", data=body, content_type="application/json")
    assert response.status_code == 413
    assert response.get_json()["error"] == "payload_too_large"
    assert snapshot() == before


def test_wrong_method_is_405_json(client):
    response = client.get("/webhook/")
    assert response.status_code == 405
    assert response.get_json()["error"] == "method_not_allowed"


def test_request_id_is_echoed_or_generated(client):
    response = client.post(
        "/webhook/", json=new_conversation(new_id()), headers={"X-Request-ID": "abc-123"}
    )
    assert response.headers["X-Request-ID"] == "abc-123"
    response = client.post("/webhook/", json=new_conversation(new_id()))
    assert len(response.headers["X-Request-ID"]) == 32


def _concurrently(app, events, workers=8):
    """POST the events at once from several threads; return the statuses."""
    barrier = threading.Barrier(len(events))
    statuses = [None] * len(events)

    def send(i):
        with app.test_client() as c:
            barrier.wait()
            statuses[i] = c.post("/webhook/", json=events[i]).status_code

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(events))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(statuses)


def test_concurrent_duplicate_conversation(app):
    conversation_id = new_id()
    statuses = _concurrently(app, [new_conversation(conversation_id)] * 6)
    assert statuses == [201] + [400] * 5
    assert snapshot()[0] == 1


def test_concurrent_duplicate_message(app, client):
    conversation_id = open_conversation(client)
    message_id = new_id()
    statuses = _concurrently(app, [new_message(message_id, conversation_id)] * 6)
    assert statuses == [202] + [400] * 5
    assert snapshot()[1] == 1


def test_concurrent_duplicate_held_message(app):
    message_id, conversation_id = new_id(), new_id()
    statuses = _concurrently(app, [new_message(message_id, conversation_id)] * 6)
    assert statuses == [202] + [400] * 5
    assert snapshot()[2] == 1
