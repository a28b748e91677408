"""GET endpoints through HTTP on PostgreSQL: one conversation, the list, held and activity."""

from datetime import datetime, timedelta

import pytest

from tests.helpers import (
    close_conversation,
    messages,
    new_conversation,
    new_id,
    new_message,
    open_conversation,
    post,
)

CONVERSATION_KEYS = {"id", "status", "created_at", "updated_at", "messages"}
MESSAGE_KEYS = {"id", "type", "content", "timestamp"}
SUMMARY_KEYS = {"id", "status", "created_at", "updated_at", "message_count", "last_message_at"}


def parse(moment):
    """An ISO-8601 datetime from a response, which must carry the UTC offset."""
    assert moment.endswith("+00:00"), moment
    return datetime.fromisoformat(moment)


def get_json(client, url, status=200):
    response = client.get(url)
    assert response.status_code == status, response.get_json()
    assert response.mimetype == "application/json"
    return response.get_json()


def listing(client, **params):
    query = "&".join(f"{key}={value}" for key, value in params.items())
    return get_json(client, f"/conversations/?{query}")


@pytest.mark.parametrize("suffix", ["/", ""])
def test_conversation_shape(client, fake_clock, suffix):
    conversation_id = open_conversation(client)
    message_id = new_id()
    fake_clock.advance(1)
    post(client, new_message(message_id, conversation_id, "Oi", "2025-06-04T11:20:05-03:00"), 202)

    body = get_json(client, f"/conversations/{conversation_id}{suffix}")

    assert set(body) == CONVERSATION_KEYS
    assert body["id"] == conversation_id
    assert body["status"] == "OPEN"
    assert parse(body["created_at"]) == parse(body["updated_at"])
    assert body["messages"] == [
        {
            "id": message_id,
            "type": "INBOUND",
            "content": "Oi",
            "timestamp": "2025-06-04T14:20:05+00:00",
        }
    ]


def test_closed_conversation_shape(client, fake_clock):
    conversation_id = open_conversation(client)
    message_id = new_id()
    post(client, new_message(message_id, conversation_id), 202)
    fake_clock.advance(2)
    post(client, close_conversation(conversation_id), 200)

    body = get_json(client, f"/conversations/{conversation_id}")

    assert body["status"] == "CLOSED"
    assert parse(body["updated_at"]) - parse(body["created_at"]) == timedelta(seconds=2)
    inbound, reply = body["messages"]
    assert set(inbound) == set(reply) == MESSAGE_KEYS
    assert reply["type"] == "OUTBOUND"
    assert reply["content"] == f"Mensagens recebidas:\n{message_id}\n"
    assert parse(reply["timestamp"]) == parse(body["updated_at"])


@pytest.mark.parametrize(
    "url",
    [
        "/conversations/{unknown}/",
        "/conversations/{unknown}",
        "/conversations/abc/",
        "/conversations/123",
        "/conversations/6a41b347-8d80-4ce9-84ba/",
        "/conversations/{unknown}x/",
    ],
)
def test_unknown_or_malformed_id_is_404_json(client, url):
    body = get_json(client, url.format(unknown=new_id()), 404)
    assert body["code"] == 404
    assert body["status"] == "Not Found"
    assert body["error"] in {"conversation_not_found", "not_found"}
    assert body["message"]


def test_uppercase_id_finds_the_conversation(client):
    conversation_id = open_conversation(client)
    assert get_json(client, f"/conversations/{conversation_id.upper()}/")["id"] == conversation_id


def test_messages_come_in_recorded_order(client, fake_clock):
    conversation_id = open_conversation(client)
    # Sender timestamps go backwards: the order must follow arrival, not them.
    stamps = ["2025-06-04T14:20:09Z", "2025-06-04T14:20:01Z", "2025-06-04T14:20:05Z"]
    ids = []
    for stamp in stamps:
        fake_clock.advance(0.5)
        ids.append(new_id())
        post(client, new_message(ids[-1], conversation_id, timestamp=stamp), 202)
    sent = new_id()
    fake_clock.advance(0.5)
    post(client, new_message(sent, conversation_id, "Já vou ver", direction="SENT"), 202)
    fake_clock.advance(0.5)
    post(client, close_conversation(conversation_id), 200)

    stored = messages(client, conversation_id)

    assert [m["id"] for m in stored[:4]] == [*ids, sent]
    assert [m["type"] for m in stored] == ["INBOUND"] * 3 + ["OUTBOUND"] * 2
    assert stored[4]["content"] == "Mensagens recebidas:\n" + "".join(f"{i}\n" for i in ids)


def test_empty_list(client):
    assert listing(client) == {"items": [], "next_cursor": None}


def test_list_is_newest_first_with_counts(client, fake_clock):
    older = open_conversation(client)
    fake_clock.advance(1)
    post(client, new_message(new_id(), older, timestamp="2020-01-01T00:00:00Z"), 202)
    fake_clock.advance(1)
    arrival = fake_clock()
    post(client, new_message(new_id(), older), 202)
    fake_clock.advance(1)
    newer = open_conversation(client)

    body = get_json(client, "/conversations")

    assert body["next_cursor"] is None
    first, second = body["items"]
    assert set(first) == set(second) == SUMMARY_KEYS
    assert (first["id"], second["id"]) == (newer, older)
    assert first["status"] == "OPEN"
    assert first["message_count"] == 0
    assert first["last_message_at"] is None
    assert second["message_count"] == 2
    # The arrival clock, not the sender's timestamp.
    assert parse(second["last_message_at"]).timestamp() == arrival / 1_000_000
    assert parse(first["created_at"]) > parse(second["created_at"])


def test_list_filters_by_status(client, fake_clock):
    open_id = open_conversation(client)
    fake_clock.advance(1)
    closed_id = open_conversation(client)
    post(client, close_conversation(closed_id), 200)

    assert [c["id"] for c in listing(client, status="OPEN")["items"]] == [open_id]
    closed = listing(client, status="CLOSED")["items"]
    assert [c["id"] for c in closed] == [closed_id]
    assert closed[0]["status"] == "CLOSED"
    assert closed[0]["message_count"] == 0  # an empty group gets no reply
    assert len(listing(client)["items"]) == 2


def test_closed_conversation_counts_its_reply(client):
    conversation_id = open_conversation(client)
    post(client, new_message(new_id(), conversation_id), 202)
    post(client, close_conversation(conversation_id), 200)
    assert listing(client)["items"][0]["message_count"] == 2


def test_list_searches_by_id_prefix(client, fake_clock):
    wanted = "abcdef12-0000-4000-8000-000000000001"
    similar = "abcdef99-0000-4000-8000-000000000002"
    other = "12345678-0000-4000-8000-000000000003"
    for conversation_id in (wanted, similar, other):
        fake_clock.advance(1)
        post(client, new_conversation(conversation_id), 201)

    assert [c["id"] for c in listing(client, q="abcdef12")["items"]] == [wanted]
    assert [c["id"] for c in listing(client, q="ABCDEF")["items"]] == [similar, wanted]
    assert [c["id"] for c in listing(client, q=wanted)["items"]] == [wanted]
    assert listing(client, q="bcdef")["items"] == []
    assert listing(client, q="0000")["items"] == []


def test_list_search_treats_like_wildcards_literally(client):
    conversation_id = open_conversation(client)
    # Wildcards are stripped, so they never widen a search to other ids.
    assert [c["id"] for c in listing(client, q=f"{conversation_id[:4]}%25")["items"]] == [
        conversation_id
    ]
    assert listing(client, q="_")["items"] == listing(client)["items"]


def test_pagination_walks_every_conversation_once(client, fake_clock):
    created = []
    for i in range(7):
        if i not in (3, 4):  # three conversations share a created_at: the id breaks the tie
            fake_clock.advance(1)
        created.append((fake_clock(), open_conversation(client)))
    expected = [conversation_id for _, conversation_id in sorted(created, reverse=True)]

    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        body = listing(client, **params)
        pages += 1
        assert len(body["items"]) <= 3
        seen += [c["id"] for c in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break

    assert pages == 3
    assert seen == expected
    assert len(set(seen)) == 7


def test_pagination_with_a_filter(client, fake_clock):
    opened = []
    for _ in range(4):
        fake_clock.advance(1)
        opened.append(open_conversation(client))
        fake_clock.advance(1)
        closed = open_conversation(client)
        post(client, close_conversation(closed), 200)

    first = listing(client, status="OPEN", limit=2)
    second = listing(client, status="OPEN", limit=2, cursor=first["next_cursor"])

    assert [c["id"] for c in first["items"] + second["items"]] == opened[::-1]
    assert second["next_cursor"] is None


def test_exact_page_has_no_next_cursor(client, fake_clock):
    for _ in range(2):
        fake_clock.advance(1)
        open_conversation(client)
    assert listing(client, limit=2)["next_cursor"] is None
    assert listing(client, limit=1)["next_cursor"] is not None


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=101",
        "limit=-1",
        "limit=abc",
        "limit=",
        "status=open",
        "status=BOGUS",
        "cursor=abc",
        "cursor=!!!!",
        "cursor=bm90LWEtY3Vyc29y",
        "cursor=" + "A" * 201,
        "q=",
        "q=" + "a" * 37,
    ],
)
def test_invalid_list_arguments_are_400_json(client, query):
    body = get_json(client, f"/conversations/?{query}", 400)
    assert body["code"] == 400
    assert body["status"] == "Bad Request"
    assert body["error"]


def test_invalid_cursor_has_its_own_code(client):
    assert get_json(client, "/conversations/?cursor=abc", 400)["error"] == "invalid_cursor"


def test_held_message_is_listed(client, fake_clock):
    message_id, conversation_id = new_id(), new_id()
    arrival = fake_clock()
    post(client, new_message(message_id, conversation_id, "Cheguei antes"), 202)

    body = get_json(client, "/held/")

    assert list(body) == ["items"]
    (held,) = body["items"]
    assert held["id"] == message_id
    assert held["conversation_id"] == conversation_id
    assert held["content"] == "Cheguei antes"
    assert held["status"] == "HELD"
    assert held["expired_at"] is None
    assert parse(held["received_at"]).timestamp() == arrival / 1_000_000
    assert parse(held["expires_at"]) - parse(held["received_at"]) == timedelta(seconds=6)
    assert get_json(client, "/held")["items"] == body["items"]
    assert get_json(client, f"/held/?conversation_id={conversation_id}")["items"] == body["items"]
    assert get_json(client, f"/held/?conversation_id={new_id()}")["items"] == []
    assert get_json(client, "/held/?status=EXPIRED")["items"] == []
    assert get_json(client, "/held/?status=HELD")["items"] == body["items"]


@pytest.mark.parametrize("query", ["status=BOGUS", "limit=0", "limit=1001", "conversation_id=x"])
def test_invalid_held_arguments_are_400(client, query):
    assert get_json(client, f"/held/?{query}", 400)["error"]


def test_activity_shows_the_open_group(client, fake_clock):
    conversation_id = open_conversation(client)
    first, second = new_id(), new_id()
    post(client, new_message(first, conversation_id), 202)
    fake_clock.advance(2)
    arrival = fake_clock()
    post(client, new_message(second, conversation_id), 202)

    body = get_json(client, f"/conversations/{conversation_id}/activity")

    assert set(body) == {"conversation_id", "group", "held"}
    assert body["conversation_id"] == conversation_id
    assert body["held"] == []
    group = body["group"]
    assert group["message_ids"] == [first, second]
    last = parse(group["last_arrival_at"])
    assert last.timestamp() == arrival / 1_000_000
    assert parse(group["reply_due_at"]) - last == timedelta(seconds=5)


def test_activity_of_a_quiet_conversation(client):
    conversation_id = open_conversation(client)
    body = get_json(client, f"/conversations/{conversation_id}/activity/")
    assert body == {"conversation_id": conversation_id, "group": None, "held": []}


def test_activity_shows_held_messages(client):
    message_id, conversation_id = new_id(), new_id()
    post(client, new_message(message_id, conversation_id), 202)
    body = get_json(client, f"/conversations/{conversation_id}/activity")
    assert body["group"] is None
    assert [h["id"] for h in body["held"]] == [message_id]


def test_activity_of_a_malformed_id_is_404(client):
    assert get_json(client, "/conversations/abc/activity", 404)["error"]
