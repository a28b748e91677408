"""Bugs the property-based contract run found, pinned as ordinary tests."""

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
