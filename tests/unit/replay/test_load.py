"""Unit tests for scripts/replay/load.py: percentiles, reply analysis, and a short run
against the in-process fake service."""

from __future__ import annotations

import pytest

from scripts.replay import load
from scripts.replay.client import Client, ClientPool
from scripts.replay.events import utc_now_iso
from scripts.replay.load import (
    Group,
    LoadConfig,
    LoadRunner,
    analyze_groups,
    load_report_ok,
    percentile,
    render_load_report,
    summarize,
)

from .support import FakeState


def test_percentile_interpolates_linearly() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 50) == 2.5
    assert percentile(values, 100) == 4.0
    assert percentile(list(range(101)), 99) == 99
    assert percentile([7.0], 95) == 7.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summarize() -> None:
    assert summarize([0.001, 0.002, 0.003], (50,), scale=1000) == {
        "count": 3,
        "min": 1.0,
        "p50": 2.0,
        "max": 3.0,
    }
    assert summarize([])["p99"] is None


def test_analyze_groups_counts_answers_and_lateness() -> None:
    sent = 1_700_000_000.0
    groups = [
        Group(0, "c1", ["a", "b"], [202, 202], 2, sent),
        Group(1, "c1", ["c"], [202], 1, sent),
        Group(2, "c2", ["d"], [202], 1, sent),
        Group(3, "c2", ["e"], [503], 1, sent),  # rejected: not expected to be answered
    ]
    stamp = utc_now_iso(sent + 5.5)
    reply = {"type": "OUTBOUND", "timestamp": stamp}
    conversations = {
        "c1": {
            "messages": [
                {**reply, "content": "Mensagens recebidas:\na\nb\n"},
                {**reply, "content": "Mensagens recebidas:\nc\n"},
                {**reply, "content": "Mensagens recebidas:\nc\nzz\n"},
            ]
        },
        "c2": {"messages": [{"type": "INBOUND", "content": "Mensagens recebidas:\nd\n"}]},
    }
    analysis = analyze_groups(groups, conversations)
    assert analysis.answers == {0: 1, 1: 2, 2: 0}
    assert analysis.mismatched == 1 and analysis.foreign_ids == 1 and analysis.replies_seen == 3
    assert analysis.lateness == pytest.approx([0.5, 0.5], abs=0.002)


def short_run(**settings) -> LoadConfig:
    """A run of a fraction of a second against the fake service, groups of one message."""
    defaults = {
        "rate": 20,
        "messages_per_group": 1,
        "gap": 0,
        "concurrency": 4,
        "margin": 0.05,
        "reply_wait": 0.3,
        "poll_interval": 0.05,
    }
    return LoadConfig(**(defaults | settings))


def test_load_runner_against_fake(
    fake: tuple[str, FakeState], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(load, "GROUP_QUIET_SECONDS", 0.05)  # the fake replies instantly
    config = short_run(conversations=3, duration=0.15)
    assert config.validate() == []
    pool = ClientPool(lambda: Client(fake[0]))
    report = LoadRunner(pool, config).run()
    groups = report["groups"]
    assert report["conversations"]["created"] == 3
    assert groups["sent"] >= 2 and groups["answered_once"] == groups["sent"]
    assert groups["unanswered"] == groups["answered_more_than_once"] == 0
    assert report["replies_seen"] == groups["sent"]
    assert report["reply_lateness_s"]["count"] == groups["sent"]
    assert report["requests"]["total"] == 3 + groups["sent"]
    assert report["requests"]["by_status"] == {"201": 3, "202": groups["sent"]}
    assert load_report_ok(report) and "PASS" in render_load_report(report)


def test_a_failed_read_keeps_the_previous_one(
    fake: tuple[str, FakeState], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A conversation whose last read for replies failed (a 503, a timeout) keeps its earlier
    read: its groups were answered, and the report says a read failed."""
    monkeypatch.setattr(load, "GROUP_QUIET_SECONDS", 0.05)
    fetch = LoadRunner._fetch_conversations
    calls = []

    def flaky(self, conv_ids):
        fetched = fetch(self, conv_ids)
        calls.append(len(fetched))
        first, second = sorted(fetched)
        if len(calls) == 1:  # the first read misses a reply, so the runner reads again
            body = fetched[second]
            body["messages"] = [m for m in body["messages"] if m["type"] != "OUTBOUND"]
        else:  # and every later read fails for the other conversation
            del fetched[first]
        return fetched

    monkeypatch.setattr(LoadRunner, "_fetch_conversations", flaky)
    config = short_run(conversations=2, duration=0.1, margin=0.3, reply_wait=0.4)
    report = LoadRunner(ClientPool(lambda: Client(fake[0])), config).run()
    assert len(calls) > 1
    assert report["groups"]["unanswered"] == 0
    assert report["groups"]["answered_once"] == report["groups"]["sent"] >= 1
    assert report["conversation_reads_failed"] == 1


def test_load_config_validation() -> None:
    errors = LoadConfig(rate=0, gap=5).validate()
    assert any("--rate" in e for e in errors) and any("--gap" in e for e in errors)
    assert LoadConfig(conversations=16, messages_per_group=3, gap=1).sustainable_rate == 2.0
