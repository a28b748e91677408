"""Bugs the property-based contract run found, pinned as ordinary tests."""

import json
import uuid

import pytest

from tests.helpers import new_id, post


@pytest.mark.parametrize("kind", [{}, [], ["NEW_MESSAGE"], {"NEW_MESSAGE": 1}])
def test_unhashable_event_type_is_400_not_500(client, kind):
    """The metrics label used to look the type up in a dict, raising TypeError."""
    event = {"type": kind, "timestamp": "2025-06-04T14:20:05Z", "data": {"id": new_id()}}
    response = post(client, event, 400)
    assert response.get_json()["error"] == "invalid_event"


@pytest.mark.parametrize(
    ("method", "url", "allowed"),
    [
        ("TRACE", "/webhook/", {"POST", "OPTIONS"}),
        ("DELETE", "/conversations/{id}/", {"GET", "HEAD", "OPTIONS"}),
        ("POST", "/conversations/", {"GET", "HEAD", "OPTIONS"}),
        ("PUT", "/held/", {"GET", "HEAD", "OPTIONS"}),
    ],
)
def test_405_lists_the_allowed_methods(client, method, url, allowed):
    """RFC 9110 requires Allow on a 405; the JSON error handler used to drop it."""
    response = client.open(url.format(id=new_id()), method=method)
    assert response.status_code == 405
    assert set(response.headers["Allow"].split(", ")) == allowed
    assert response.get_json()["error"] == "method_not_allowed"


@pytest.mark.parametrize("timestamp", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_timestamp_outside_utc_range_is_400(client, timestamp):
    event = {"type": "NEW_CONVERSATION", "timestamp": timestamp, "data": {"id": str(uuid.uuid4())}}
    response = client.post("/webhook/", json=event)
    assert response.status_code == 400
    assert "timestamp" in response.get_json()["errors"]


@pytest.mark.parametrize("content", ["a\u0000b", "\ud800"], ids=["nul", "lone-surrogate"])
@pytest.mark.parametrize("known", [True, False], ids=["stored", "held"])
def test_content_postgres_cannot_store_is_400(client, content, known):
    conversation_id = str(uuid.uuid4())
    if known:
        client.post(
            "/webhook/",
            json={
                "type": "NEW_CONVERSATION",
                "timestamp": "2025-06-04T14:20:00Z",
                "data": {"id": conversation_id},
            },
        )
    body = json.dumps(
        {
            "type": "NEW_MESSAGE",
            "timestamp": "2025-06-04T14:20:05Z",
            "data": {
                "id": str(uuid.uuid4()),
                "conversation_id": conversation_id,
                "content": content,
            },
        }
    )
    response = client.post("/webhook/", data=body, content_type="application/json")
    assert response.status_code == 400
    assert "content" in response.get_json()["errors"]["data"]
