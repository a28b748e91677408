"""Unit tests for scripts/replay/client.py against the in-process fake service."""

from __future__ import annotations

import hashlib
import hmac

from scripts.replay.client import SIGNATURE_HEADER, Client, sign
from scripts.replay.events import new_conversation_event

from .support import FakeState


def test_signature_header(fake: tuple[str, FakeState]) -> None:
    base_url, state = fake
    client = Client(base_url, secret="s3cret")
    response = client.post_event(new_conversation_event("c1"))
    client.close()
    assert response.status == 201
    headers, raw = state.requests[0]
    expected = "sha256=" + hmac.new(b"s3cret", raw, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER] == expected == sign("s3cret", raw)


def test_no_signature_without_secret(fake: tuple[str, FakeState]) -> None:
    base_url, state = fake
    client = Client(base_url)
    client.post_event(new_conversation_event("c1"))
    client.close()
    assert SIGNATURE_HEADER not in state.requests[0][0]


def test_transport_error_is_status_zero() -> None:
    client = Client("http://127.0.0.1:9", timeout=0.5)
    assert client.post_event(new_conversation_event("c1")).status == 0
