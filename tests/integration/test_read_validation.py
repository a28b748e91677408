"""Input the read side must refuse or normalise before it reaches the database (issue 12,
items 4, 6 and 7): control characters in query parameters, forged cursors, ids in every form
the webhook takes, timestamps with trailing bytes. Every refusal is 4xx in the JSON error
shape, never a 500; reads run on PostgreSQL and on the embedded SQLite default."""

import base64

import pytest

from tests.helpers import error, new_conversation, new_id, new_message, open_conversation, post


@pytest.fixture
def reader(app_on_each_backend):
    """A client of an app on the test PostgreSQL database, then on a migrated SQLite file."""
    return app_on_each_backend.test_client()


def cursor(raw):
    return base64.urlsafe_b64encode(raw.encode()).decode()


# Item 4: the timestamp is exactly an ISO-8601 date and time, or the event is 400.


@pytest.mark.parametrize(
    "timestamp",
    [
        "2025-06-04T14:20:05Z\u0000garbage",
        "2025-06-04T14:20:05Z garbage",
        "2025-06-04T14:20:05Z\n",
        "2025-06-04T14:20:05.Z",
        "2025-06-04 14:20:05Z",
        "20250604T142005Z",
        "2025-W23-3T14:20:05Z",
        "2025-06-04",
        "2025-06-04T14",
        "\u0662\u0660\u0662\u0665-06-04T14:20:05Z",
    ],
)
def test_timestamp_with_anything_else_is_400(reader, timestamp):
    conversation_id = new_id()
    response = post(reader, new_conversation(conversation_id, timestamp=timestamp))
    assert "timestamp" in error(response, 400, "invalid_event")["errors"]
    error(reader.get(f"/conversations/{conversation_id}/"), 404, "conversation_not_found")


@pytest.mark.parametrize(
    ("timestamp", "stored"),
    [
        ("2025-06-04T14:20:05Z", "2025-06-04T14:20:05+00:00"),
        ("2025-06-04t14:20:05z", "2025-06-04T14:20:05+00:00"),
        ("2025-06-04T14:20Z", "2025-06-04T14:20:00+00:00"),
        ("2025-06-04T11:20:05-0300", "2025-06-04T14:20:05+00:00"),
        ("2025-06-04T11:20:05-03", "2025-06-04T14:20:05+00:00"),
        ("2025-06-04T14:20:05,5", "2025-06-04T14:20:05.500000+00:00"),
        ("2025-06-04T14:20:05.123456789Z", "2025-06-04T14:20:05.123456+00:00"),
    ],
)
def test_timestamp_forms_senders_write_are_kept(client, timestamp, stored):
    conversation_id = open_conversation(client)
    post(client, new_message(new_id(), conversation_id, timestamp=timestamp), 202)
    [message] = client.get(f"/conversations/{conversation_id}/").get_json()["messages"]
    assert message["timestamp"] == stored


# Item 6: reads take an id in every form writes take, and answer it canonical.

ID_FORMS = {
    "upper case": str.upper,
    "braced": lambda i: f"{{{i}}}",
    "urn": lambda i: f"urn:uuid:{i}",
    "no hyphens": lambda i: i.replace("-", ""),
    "braced upper without hyphens": lambda i: f"{{{i.replace('-', '').upper()}}}",
}


@pytest.mark.parametrize("form", ID_FORMS.values(), ids=ID_FORMS.keys())
def test_id_forms_writes_take_are_read_back_canonical(reader, form):
    conversation_id, message_id = new_id(), new_id()
    post(reader, new_conversation(form(conversation_id)), 201)
    post(reader, new_message(form(message_id), form(conversation_id)), 202)

    response = reader.get(f"/conversations/{form(conversation_id)}/")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["id"] == conversation_id
    assert [m["id"] for m in body["messages"]] == [message_id]
    activity = reader.get(f"/conversations/{form(conversation_id)}/activity").get_json()
    assert activity["conversation_id"] == conversation_id


@pytest.mark.parametrize("form", ID_FORMS.values(), ids=ID_FORMS.keys())
def test_held_filter_takes_every_id_form(reader, form):
    message_id, conversation_id = new_id(), new_id()
    post(reader, new_message(message_id, conversation_id), 202)
    query = {"conversation_id": form(conversation_id)}
    items = reader.get("/held/", query_string=query).get_json()["items"]
    assert [(h["id"], h["conversation_id"]) for h in items] == [(message_id, conversation_id)]


# Forms `uuid.UUID` takes by accident of int(): some of them name another id.
NOT_IDS = {
    "sign": lambda i: "+" + i.replace("-", "")[1:],
    "0x": lambda i: "0x" + i.replace("-", "")[2:],
    "underscore": lambda i: i.replace("-", "")[:4] + "_" + i.replace("-", "")[5:],
    "stray hyphens": lambda i: i.replace("-", "")[:4] + "-" + i.replace("-", "")[4:],
    "urn and braces": lambda i: f"urn:uuid:{{{i}}}",
    "one brace": lambda i: f"{{{i}",
    "doubled braces": lambda i: f"{{{{{i}}}}}",
    "uuid prefix": lambda i: f"uuid:{i}",
    "upper urn": lambda i: f"URN:UUID:{i}",
}


@pytest.mark.parametrize("form", NOT_IDS.values(), ids=NOT_IDS.keys())
def test_other_id_forms_are_refused_on_both_sides(client, form):
    conversation_id = open_conversation(client)
    response = post(client, new_conversation(form(new_id())))
    assert "data" in error(response, 400, "invalid_event")["errors"]
    response = post(client, new_message(new_id(), form(conversation_id)))
    assert "data" in error(response, 400, "invalid_event")["errors"]
    error(client.get(f"/conversations/{form(conversation_id)}/"), 404, "not_found")
    error(client.get("/held/", query_string={"conversation_id": form(conversation_id)}), 400)


# Item 7: every query parameter and cursor is a value the database takes, or 400.


@pytest.mark.parametrize(
    "query",
    [
        "q=%00",
        "q=abc%00",
        "q=%01",
        "q=a%0Ab",
        "q=%7F",
        "q=%C2%85",
        "cursor=%00",
        "status=OPEN%00",
        "limit=1%00",
        "conversation_id=%00",
    ],
)
def test_control_characters_in_parameters_are_400(reader, query):
    path = "/held/" if query.startswith("conversation_id") else "/conversations/"
    error(reader.get(f"{path}?{query}"), 400)


ID = "6a41b347-8d80-4ce9-84ba-7af66f369f6a"
FORGED_CURSORS = {
    # Python takes these offsets; PostgreSQL's timestamptz input does not.
    "offset +23:59": cursor(f"2025-01-01T00:00:00+23:59|{ID}"),
    "offset -23:59": cursor(f"2025-01-01T00:00:00-23:59|{ID}"),
    "offset with seconds": cursor(f"2025-01-01T00:00:00+01:00:30|{ID}"),
    "offset of another zone": cursor(f"2025-01-01T00:00:00-03:00|{ID}"),
    "naive": cursor(f"2025-01-01T00:00:00|{ID}"),
    "year 1 east of UTC": cursor(f"0001-01-01T00:00:00+05:00|{ID}"),
    "year 9999 west of UTC": cursor(f"9999-12-31T23:59:59-05:00|{ID}"),
    "NUL after the time": cursor(f"2025-01-01T00:00:00+00:00\x00x|{ID}"),
    "week date": cursor(f"2025-W01-3T00:00:00+00:00|{ID}"),
    "braced id": cursor(f"2025-01-01T00:00:00+00:00|{{{ID}}}"),
    "upper-case id": cursor(f"2025-01-01T00:00:00+00:00|{ID.upper()}"),
    "id with a sign": cursor(f"2025-01-01T00:00:00+00:00|+{ID.replace('-', '')[1:]}"),
    "three parts": cursor(f"2025-01-01T00:00:00+00:00|{ID}|x"),
    "no id": cursor("2025-01-01T00:00:00+00:00"),
    "not UTF-8": base64.urlsafe_b64encode(b"\xff\xfe|" + ID.encode()).decode(),
    "missing padding": cursor(f"2025-01-01T00:00:00+00:00|{ID}x").rstrip("="),
    "standard alphabet": base64.b64encode(b"\xfb\xff|x").decode(),
    "junk between characters": "!" + cursor(f"2025-01-01T00:00:00+00:00|{ID}"),
    "not base64": "!!!!",
    "non-ASCII": "\u00e9" * 4,
}


@pytest.mark.parametrize("value", FORGED_CURSORS.values(), ids=FORGED_CURSORS.keys())
def test_forged_cursors_are_400_invalid_cursor(reader, value):
    open_conversation(reader)
    response = reader.get("/conversations/", query_string={"cursor": value})
    error(response, 400, "invalid_cursor")


def test_the_cursor_this_service_gives_still_pages(reader):
    ids = [open_conversation(reader) for _ in range(3)]
    first = reader.get("/conversations/?limit=2").get_json()
    second = reader.get(f"/conversations/?limit=2&cursor={first['next_cursor']}").get_json()
    seen = [c["id"] for c in first["items"] + second["items"]]
    assert sorted(seen) == sorted(ids)
    assert second["next_cursor"] is None


def test_unknown_parameters_are_ignored(reader):
    conversation_id = open_conversation(reader)
    items = reader.get("/conversations/?sort=%00&page=-1").get_json()["items"]
    assert [c["id"] for c in items] == [conversation_id]
    assert reader.get("/held/?q=%00").get_json() == {"items": []}


def test_a_bad_query_parameter_says_which(client):
    """The message points at the listed fields, not at Werkzeug's stock 400 text."""
    response = client.get("/conversations/?status=bogus")
    body = response.get_json()
    assert response.status_code == 400
    assert body["message"] == "Invalid request parameters; see errors."
    assert "status" in body["errors"]["query"]
