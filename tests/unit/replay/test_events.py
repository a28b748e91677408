"""Unit tests for scripts/replay/events.py: placeholders, timestamps, reply parsing."""

from __future__ import annotations

import re
import time

from scripts.replay.events import Placeholders, find_placeholders, parse_iso, parse_reply

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
