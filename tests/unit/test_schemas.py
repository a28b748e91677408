"""load_event in service.api.schemas: every valid and invalid shape, with no services."""

from datetime import UTC, datetime
from uuid import UUID

import pytest

from marshmallow import ValidationError

from service.api.schemas import load_event

CONVERSATION = "6a41b347-8d80-4ce9-84ba-7af66f369f6a"
MESSAGE = "49108c71-4dca-4af3-9f32-61bc745926e2"
LIMIT = 4096

SEEDS = [
    {
        "type": "NEW_CONVERSATION",
        "timestamp": "2025-06-04T14:20:00Z",
        "data": {"id": CONVERSATION},
    },
    {
        "type": "NEW_MESSAGE",
        "timestamp": "2025-06-04T14:20:05Z",
        "data": {
            "id": MESSAGE,
            "content": "Olá, quero informações sobre alugar um apartamento.",
            "conversation_id": CONVERSATION,
        },
    },
    {
        "type": "CLOSE_CONVERSATION",
        "timestamp": "2025-06-04T14:25:00Z",
        "data": {"id": CONVERSATION},
    },
]


def message(**data):
    base = {"id": MESSAGE, "conversation_id": CONVERSATION, "content": "Oi"}
    base.update(data)
    return {"type": "NEW_MESSAGE", "timestamp": "2025-06-04T14:20:05Z", "data": base}


def conversation(timestamp="2025-06-04T14:20:00Z", **data):
    return {"type": "NEW_CONVERSATION", "timestamp": timestamp, "data": data}


@pytest.mark.parametrize("seed", SEEDS, ids=[s["type"] for s in SEEDS])
def test_seed_events_load(seed):
    event = load_event(seed, LIMIT)
    assert event["type"] == seed["type"]
    assert event["timestamp"].tzinfo is not None
    assert event["data"]["id"] == UUID(seed["data"]["id"])


def test_new_message_fields():
    event = load_event(SEEDS[1], LIMIT)
    assert event["timestamp"] == datetime(2025, 6, 4, 14, 20, 5, tzinfo=UTC)
    assert event["data"] == {
        "id": UUID(MESSAGE),
        "conversation_id": UUID(CONVERSATION),
        "content": "Olá, quero informações sobre alugar um apartamento.",
        "direction": "RECEIVED",
    }


def test_sent_direction_is_kept():
    assert load_event(message(direction="SENT"), LIMIT)["data"]["direction"] == "SENT"


def test_extra_fields_are_ignored():
    event = conversation(id=CONVERSATION, channel="whatsapp")
    event["source"] = "platform"
    loaded = load_event(event, LIMIT)
    assert set(loaded) == {"type", "timestamp", "data"}
    assert loaded["data"] == {"id": UUID(CONVERSATION)}


def test_uppercase_uuid_is_canonicalised():
    loaded = load_event(conversation(id=CONVERSATION.upper()), LIMIT)
    assert str(loaded["data"]["id"]) == CONVERSATION


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        ("2025-06-04T14:20:05", datetime(2025, 6, 4, 14, 20, 5, tzinfo=UTC)),
        ("2025-06-04T14:20:05Z", datetime(2025, 6, 4, 14, 20, 5, tzinfo=UTC)),
        ("2025-06-04T11:20:05-03:00", datetime(2025, 6, 4, 14, 20, 5, tzinfo=UTC)),
        (
            "2025-02-21T10:20:41.349308",
            datetime(2025, 2, 21, 10, 20, 41, 349308, tzinfo=UTC),
        ),
        ("2025-06-04T14:20:05.123+00:00", datetime(2025, 6, 4, 14, 20, 5, 123000, tzinfo=UTC)),
    ],
)
def test_timestamps_become_utc(timestamp, expected):
    loaded = load_event(conversation(timestamp=timestamp, id=CONVERSATION), LIMIT)["timestamp"]
    assert loaded == expected
    assert loaded.utcoffset().total_seconds() == 0


def test_naive_timestamp_means_utc():
    naive = load_event(conversation(timestamp="2025-06-04T14:20:05", id=CONVERSATION), LIMIT)
    offset = load_event(conversation(timestamp="2025-06-04T11:20:05-03:00", id=CONVERSATION), LIMIT)
    assert naive["timestamp"] == offset["timestamp"]
    assert naive["timestamp"].tzinfo == UTC


def test_content_limit_is_a_parameter():
    assert load_event(message(content="é" * 10), 10)["data"]["content"] == "é" * 10
    with pytest.raises(ValidationError) as info:
        load_event(message(content="é" * 11), 10)
    assert "content" in info.value.messages["data"]


def test_content_at_the_default_limit():
    load_event(message(content="a" * LIMIT), LIMIT)
    with pytest.raises(ValidationError):
        load_event(message(content="a" * (LIMIT + 1)), LIMIT)


INVALID = {
    "array": ([], "_schema"),
    "null": (None, "_schema"),
    "string": ("NEW_CONVERSATION", "_schema"),
    "number": (42, "_schema"),
    "unknown type": ({"type": "DELETE", "timestamp": "2025-06-04T14:20:00Z", "data": {}}, "type"),
    "lowercase type": (
        {"type": "new_conversation", "timestamp": "2025-06-04T14:20:00Z", "data": {}},
        "type",
    ),
    "type missing": ({"timestamp": "2025-06-04T14:20:00Z", "data": {"id": CONVERSATION}}, "type"),
    "type not string": (
        {"type": ["NEW_MESSAGE"], "timestamp": "2025-06-04T14:20:00Z", "data": {}},
        "type",
    ),
    "timestamp missing": ({"type": "NEW_CONVERSATION", "data": {"id": CONVERSATION}}, "timestamp"),
    "timestamp garbage": (conversation(timestamp="yesterday", id=CONVERSATION), "timestamp"),
    "timestamp number": (conversation(timestamp=1717510800, id=CONVERSATION), "timestamp"),
    "timestamp bad month": (
        conversation(timestamp="2025-13-04T14:20:00Z", id=CONVERSATION),
        "timestamp",
    ),
    "timestamp null": (conversation(timestamp=None, id=CONVERSATION), "timestamp"),
    "data missing": ({"type": "NEW_CONVERSATION", "timestamp": "2025-06-04T14:20:00Z"}, "data"),
    "data null": (
        {"type": "NEW_CONVERSATION", "timestamp": "2025-06-04T14:20:00Z", "data": None},
        "data",
    ),
    "data list": (
        {"type": "CLOSE_CONVERSATION", "timestamp": "2025-06-04T14:20:00Z", "data": []},
        "data",
    ),
    "data string": (
        {"type": "CLOSE_CONVERSATION", "timestamp": "2025-06-04T14:20:00Z", "data": "x"},
        "data",
    ),
    "id missing": (conversation(), "data"),
    "id not uuid": (conversation(id="6a41b347"), "data"),
    "id number": (conversation(id=12), "data"),
    "id null": (conversation(id=None), "data"),
    "message id bad": (message(id="not-a-uuid"), "data"),
    "conversation id bad": (message(conversation_id="x"), "data"),
    "conversation id missing": (
        {
            "type": "NEW_MESSAGE",
            "timestamp": "2025-06-04T14:20:00Z",
            "data": {"id": MESSAGE, "content": "Oi"},
        },
        "data",
    ),
    "content empty": (message(content=""), "data"),
    "content missing": (
        {
            "type": "NEW_MESSAGE",
            "timestamp": "2025-06-04T14:20:00Z",
            "data": {"id": MESSAGE, "conversation_id": CONVERSATION},
        },
        "data",
    ),
    "content number": (message(content=5), "data"),
    "content null": (message(content=None), "data"),
    "content object": (message(content={"text": "Oi"}), "data"),
    "content too long": (message(content="a" * (LIMIT + 1)), "data"),
    "direction unknown": (message(direction="SIDEWAYS"), "data"),
    "direction null": (message(direction=None), "data"),
}


@pytest.mark.parametrize(("payload", "field"), INVALID.values(), ids=INVALID.keys())
def test_invalid_events_raise_with_field_messages(payload, field):
    with pytest.raises(ValidationError) as info:
        load_event(payload, LIMIT)
    assert field in info.value.messages
