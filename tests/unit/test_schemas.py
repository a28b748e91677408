"""load_event in service.api.schemas: every valid and invalid shape, with no services."""

from datetime import UTC, datetime
from uuid import UUID

import pytest

from marshmallow import ValidationError

from service.api.schemas import load_event, parse_timestamp, parse_uuid

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
    "timestamp NUL then bytes": (
        conversation(timestamp="2025-06-04T14:20:05Z\u0000garbage", id=CONVERSATION),
        "timestamp",
    ),
    "id braced with urn": (conversation(id=f"urn:uuid:{{{CONVERSATION}}}"), "data"),
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


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-06-04T14:20:05Z", datetime(2025, 6, 4, 14, 20, 5, tzinfo=UTC)),
        ("2025-06-04t14:20:05z", datetime(2025, 6, 4, 14, 20, 5, tzinfo=UTC)),
        ("2025-06-04T14:20", datetime(2025, 6, 4, 14, 20, tzinfo=UTC)),
        ("2025-06-04T17:20:05+03", datetime(2025, 6, 4, 14, 20, 5, tzinfo=UTC)),
        ("2025-06-04T17:20:05+0300", datetime(2025, 6, 4, 14, 20, 5, tzinfo=UTC)),
        ("2025-06-04T14:20:05,25Z", datetime(2025, 6, 4, 14, 20, 5, 250000, tzinfo=UTC)),
        ("2025-06-04T14:20:05.123456789Z", datetime(2025, 6, 4, 14, 20, 5, 123456, tzinfo=UTC)),
        ("2025-06-04T14:20:05.9999999999Z", datetime(2025, 6, 4, 14, 20, 5, 999999, tzinfo=UTC)),
        ("2025-01-01T00:00:00+23:59", datetime(2024, 12, 31, 0, 1, tzinfo=UTC)),
        ("0001-01-01T00:00:00-01:00", datetime(1, 1, 1, 1, 0, tzinfo=UTC)),
    ],
)
def test_parse_timestamp_forms(text, expected):
    moment = parse_timestamp(text)
    assert moment == expected
    assert moment.tzinfo is UTC


@pytest.mark.parametrize(
    "text",
    [
        "2025-06-04T14:20:05Z\x00garbage",
        "2025-06-04T14:20:05Z\n",
        " 2025-06-04T14:20:05Z",
        "2025-06-04 14:20:05",
        "2025-06-04T14:20:05.Z",
        "2025-06-04T14:20:05+03:00:30",
        "2025-06-04T14:20:05+24:00",
        "2025-06-04T14:20:05+00:99",
        "2025-06-04T14:20:05+0099",
        "2025-06-04T14:20:05+00:60",
        "2025-06-04T14:20:05-00:61",
        "2025-06-04T24:00:00",
        "20250604T142005Z",
        "2025-W23-3T14:20:05",
        "2025-155T14:20:05",
        "2025-06-04",
        "\uff12\uff10\uff12\uff15-06-04T14:20:05",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "0000-01-01T00:00:00",
        None,
        1717510800,
    ],
)
def test_parse_timestamp_refuses_the_rest(text):
    with pytest.raises(ValueError):
        parse_timestamp(text)


@pytest.mark.parametrize(
    "text",
    [
        CONVERSATION,
        CONVERSATION.upper(),
        CONVERSATION.replace("-", ""),
        f"{{{CONVERSATION}}}",
        f"{{{CONVERSATION.replace('-', '')}}}",
        f"urn:uuid:{CONVERSATION}",
        f"urn:uuid:{CONVERSATION.replace('-', '').upper()}",
    ],
)
def test_parse_uuid_forms(text):
    assert parse_uuid(text) == UUID(CONVERSATION)


HEX = CONVERSATION.replace("-", "")


@pytest.mark.parametrize(
    "text",
    [
        "+" + HEX[1:],
        " " + HEX[1:],
        HEX[1:] + "\n",
        "0x" + HEX[2:],
        HEX[:4] + "_" + HEX[5:],
        HEX[:4] + "-" + HEX[4:],
        f"urn:uuid:{{{CONVERSATION}}}",
        f"uuid:{CONVERSATION}",
        f"URN:UUID:{CONVERSATION}",
        f"{{{CONVERSATION}",
        f"{{{{{CONVERSATION}}}}}",
        CONVERSATION[:-1],
        "",
        None,
        12,
    ],
)
def test_parse_uuid_refuses_what_int_takes_by_accident(text):
    with pytest.raises(ValueError):
        parse_uuid(text)
