"""Unit tests for scripts/replay/events.py: placeholders, timestamps, reply parsing."""

from __future__ import annotations

import re
import time

from scripts.replay.events import (
    FreshIds,
    Placeholders,
    find_placeholders,
    generated_groups,
    parse_iso,
    parse_reply,
    replies_of,
)

from .support import UUID_RE


def test_placeholders_are_fresh_uuids_stable_within_a_run() -> None:
    template = {"a": "{conv}", "b": ["{msg1}", {"c": "{conv}"}], "n": 3, "text": "{not a name}"}
    first = Placeholders().substitute(template)
    second = Placeholders().substitute(template)
    assert first["a"] == first["b"][1]["c"]
    assert UUID_RE.match(first["a"]) and UUID_RE.match(first["b"][0])
    assert first["a"] != first["b"][0]
    assert first["a"] != second["a"]
    assert first["n"] == 3 and first["text"] == "{not a name}"


def test_now_placeholder_is_utc_iso_and_parses() -> None:
    value = Placeholders().substitute("{now}")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", value)
    assert abs(parse_iso(value) - time.time()) < 5


def test_find_placeholders() -> None:
    assert find_placeholders({"x": ["{a}-{b}", "{now}"], "y": 1}) == {"a", "b", "now"}


def test_parse_reply() -> None:
    assert parse_reply("Mensagens recebidas:\na\nb\n") == ["a", "b"]
    assert parse_reply("Olá") is None
    assert parse_reply(None) is None


def test_fresh_ids_replace_each_id_by_the_same_new_one() -> None:
    conv, msg = "6a41b347-8d80-4ce9-84ba-7af66f369f6a", "49108c71-4dca-4af3-9f32-61bc745926e2"
    ids = FreshIds()
    first = ids.rewrite({"type": "NEW_CONVERSATION", "data": {"id": conv}})
    second = ids.rewrite(
        {"data": {"id": msg, "conversation_id": conv.upper(), "content": "not-a-uuid"}}
    )

    fresh_conv = first["data"]["id"]
    assert UUID_RE.match(fresh_conv) and fresh_conv != conv
    assert second["data"]["conversation_id"] == fresh_conv  # any case is the same id
    assert UUID_RE.match(second["data"]["id"]) and second["data"]["id"] not in (msg, fresh_conv)
    assert second["data"]["content"] == "not-a-uuid"
    assert first["type"] == "NEW_CONVERSATION"
    assert ids.values == {conv: fresh_conv, msg: second["data"]["id"]}
    # Another run gets other ids.
    assert FreshIds().rewrite(conv) != fresh_conv


def test_replies_the_bot_wrote_are_found_by_their_group() -> None:
    conversation = {
        "messages": [
            {"id": "m1", "type": "INBOUND", "content": "Oi"},
            {"id": "r1", "type": "OUTBOUND", "content": "Olá! Em que posso ajudar?"},
            {"id": "r2", "type": "OUTBOUND", "content": "Mensagens recebidas:\nm2\n"},
            {"id": "s1", "type": "OUTBOUND", "content": "sent by an agent"},
        ]
    }
    page = {"items": [{"reply_id": "r1", "message_ids": ["m1"]}, {"bogus": 1}]}
    assert generated_groups(page) == {"r1": ["m1"]}
    assert generated_groups(None) == {}
    found = replies_of(conversation, generated_groups(page))
    assert [(r.message_id, r.ids) for r in found] == [("r1", ["m1"]), ("r2", ["m2"])]
    assert [r.message_id for r in replies_of(conversation)] == ["r2"]
