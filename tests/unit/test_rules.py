"""The pure rules of service.domain.rules: no Flask, no database, no Redis."""

import uuid

import pytest

from service.domain import rules
from service.domain.rules import Rejected

SECOND = 1_000_000
QUIET = 5 * SECOND
HOLD = 6 * SECOND


def test_open_conversation_receives():
    assert rules.check_can_receive(rules.OPEN) is None


def test_closed_conversation_rejects_messages():
    with pytest.raises(Rejected) as info:
        rules.check_can_receive(rules.CLOSED)
    assert info.value.error == "conversation_closed"
    assert info.value.message


def test_open_conversation_can_close():
    assert rules.check_can_close(rules.OPEN) is None


@pytest.mark.parametrize(
    ("status", "error"),
    [(None, "conversation_not_found"), (rules.CLOSED, "conversation_closed")],
)
def test_close_is_rejected(status, error):
    with pytest.raises(Rejected) as info:
        rules.check_can_close(status)
    assert info.value.error == error
    assert str(info.value) == info.value.message


def test_message_type_by_direction():
    assert rules.message_type(rules.RECEIVED) == rules.INBOUND
    assert rules.message_type(rules.SENT) == rules.OUTBOUND


def test_reply_content_matches_the_spec_example():
    ids = ["55ebb68a-a8ef-47d4-9a28-c97e0f0ec8f1", "8d41e347-da5f-4d03-8377-4378d86cfcf0"]
    assert rules.reply_content(ids) == (
        "Mensagens recebidas:\n"
        "55ebb68a-a8ef-47d4-9a28-c97e0f0ec8f1\n"
        "8d41e347-da5f-4d03-8377-4378d86cfcf0\n"
    )


def test_reply_content_keeps_order_and_accepts_uuids():
    first, second = uuid.uuid4(), uuid.uuid4()
    assert rules.reply_content([second, first]) == f"Mensagens recebidas:\n{second}\n{first}\n"


def test_reply_content_of_one_message():
    message_id = "49108c71-4dca-4af3-9f32-61bc745926e2"
    assert rules.reply_content([message_id]) == f"Mensagens recebidas:\n{message_id}\n"


def test_reply_id_is_deterministic():
    message_id = uuid.uuid4()
    assert rules.reply_id(message_id) == rules.reply_id(str(message_id))
    assert rules.reply_id(message_id) == rules.reply_id(uuid.UUID(str(message_id)))
    assert isinstance(rules.reply_id(message_id), uuid.UUID)


def test_reply_id_differs_per_group_and_from_the_message():
    first, second = uuid.uuid4(), uuid.uuid4()
    assert rules.reply_id(first) != rules.reply_id(second)
    assert rules.reply_id(first) != first


def test_flush_due_is_newest_plus_quiet():
    assert rules.flush_due_us(10 * SECOND, QUIET) == 15 * SECOND


@pytest.mark.parametrize(("elapsed", "held"), [(5.9, True), (6.0, True), (6.1, False)])
def test_within_hold(elapsed, held):
    received = 1_700_000_000 * SECOND
    assert rules.within_hold(received, received + round(elapsed * SECOND), HOLD) is held


def test_within_hold_when_the_conversation_came_first():
    assert rules.within_hold(10 * SECOND, 9 * SECOND, HOLD) is True


def arrivals(*seconds):
    return [(f"m{i}", round(s * SECOND)) for i, s in enumerate(seconds)]


@pytest.mark.parametrize(
    "seconds, groups",
    [
        ((), []),
        ((0,), [[0]]),
        ((0, 2, 4, 8.9), [[0, 2, 4, 8.9]]),
        ((0, 6.5), [[0], [6.5]]),
        ((0, 5), [[0], [5]]),  # a gap of exactly the window closes the group
        ((0, 4.999999, 10, 11, 20), [[0, 4.999999], [10, 11], [20]]),
    ],
)
def test_groups_split_at_every_gap_of_the_window(seconds, groups):
    found = rules.split_groups(arrivals(*seconds), QUIET)
    assert [[at / SECOND for _, at in group] for group in found] == groups


def test_the_last_group_closes_once_quiet_or_final():
    pairs = arrivals(0, 6.5)
    assert len(rules.closed_groups(pairs, 11.4 * SECOND, QUIET)) == 1
    assert len(rules.closed_groups(pairs, 11.5 * SECOND, QUIET)) == 2
    assert len(rules.closed_groups(pairs, 7 * SECOND, QUIET, final=True)) == 2
    assert rules.closed_groups([], 7 * SECOND, QUIET) == []
