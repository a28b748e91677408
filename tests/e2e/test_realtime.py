"""The timing rules in real time, through HTTP, with real web, worker and scheduler processes.

The scenarios run together, each on conversations of its own, so the module takes as long as
its longest scenario rather than their sum: the `scenarios` fixture starts those of the selected
tests at once, and each test waits for its own and fails with its assertion. Killing the workers
touches every conversation, so that test runs alone, after them.
"""

import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from datetime import datetime

import psycopg2
import pytest

from service.config import database_url
from tests.helpers import new_conversation, new_id, new_message, reply_ids, wait_for

pytestmark = pytest.mark.realtime


def open_conversation(stack):
    conversation_id = new_id()
    assert stack.post(new_conversation(conversation_id)).status_code == 201
    return conversation_id


def send(stack, conversation_id, message_id=None, status=202):
    message_id = message_id or new_id()
    response = stack.post(new_message(message_id, conversation_id))
    assert response.status_code == status, response.text
    return message_id, response.json()


def at(iso):
    return datetime.fromisoformat(iso)


def replies(stack, conversation_id):
    return [m for m in stack.conversation(conversation_id)["messages"] if m["type"] == "OUTBOUND"]


def wait_replies(stack, conversation_id, count, timeout=15):
    return wait_for(lambda: len(r := replies(stack, conversation_id)) >= count and r, timeout)


def pause_until(start, offset):
    """Wait for the next step of a scenario: the scenario itself is about time."""
    delay = start + offset - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def single_message(live_stack):
    conversation_id = open_conversation(live_stack)
    message_id, accepted = send(live_stack, conversation_id)
    [reply] = wait_replies(live_stack, conversation_id, 1)
    assert reply["content"] == f"Mensagens recebidas:\n{message_id}\n"
    assert at(reply["timestamp"]) >= at(accepted["reply_due_at"])


def burst_at_0_2_4_seconds(live_stack):
    conversation_id = open_conversation(live_stack)
    start, ids = time.monotonic(), []
    for offset in (0, 2, 4):
        pause_until(start, offset)
        message_id, accepted = send(live_stack, conversation_id)
        ids.append(message_id)
        assert replies(live_stack, conversation_id) == []
    [reply] = wait_replies(live_stack, conversation_id, 1)
    assert reply_ids(reply) == ids
    assert at(reply["timestamp"]) >= at(accepted["reply_due_at"])


def messages_every_4_seconds_for_16_seconds(live_stack):
    conversation_id = open_conversation(live_stack)
    start, ids = time.monotonic(), []
    for offset in (0, 4, 8, 12, 16):
        pause_until(start, offset)
        assert replies(live_stack, conversation_id) == []
        ids.append(send(live_stack, conversation_id)[0])
    [reply] = wait_replies(live_stack, conversation_id, 1)
    assert reply_ids(reply) == ids


def two_bursts_7_seconds_apart(live_stack):
    conversation_id = open_conversation(live_stack)
    start = time.monotonic()
    first = [send(live_stack, conversation_id)[0]]
    pause_until(start, 1)
    first.append(send(live_stack, conversation_id)[0])
    pause_until(start, 8)
    second = [send(live_stack, conversation_id)[0]]
    pause_until(start, 9)
    second.append(send(live_stack, conversation_id)[0])
    found = wait_replies(live_stack, conversation_id, 2)
    assert [reply_ids(r) for r in found] == [first, second]


def held_message_joins_its_conversation(live_stack):
    conversation_id = new_id()
    message_id, accepted = send(live_stack, conversation_id)
    assert accepted["status"] == "held"
    time.sleep(2)  # the scenario: the conversation arrives 2 s later
    assert live_stack.post(new_conversation(conversation_id)).status_code == 201
    [reply] = wait_replies(live_stack, conversation_id, 1)
    assert reply_ids(reply) == [message_id]


def held_message_expires(live_stack):
    conversation_id = new_id()
    message_id, _ = send(live_stack, conversation_id)
    time.sleep(7)  # the scenario: the conversation arrives 7 s later, past the hold
    assert live_stack.post(new_conversation(conversation_id)).status_code == 201
    response = live_stack.post(new_message(message_id, conversation_id))
    assert response.status_code == 400
    assert response.json()["error"] == "message_expired"
    assert live_stack.conversation(conversation_id)["messages"] == []


def twenty_five_concurrent_messages(live_stack):
    conversation_id = open_conversation(live_stack)
    ids = [new_id() for _ in range(25)]
    with ThreadPoolExecutor(25) as pool:
        statuses = list(
            pool.map(lambda m: live_stack.post(new_message(m, conversation_id)).status_code, ids)
        )
    assert statuses == [202] * 25
    [reply] = wait_replies(live_stack, conversation_id, 1)
    assert sorted(reply_ids(reply)) == sorted(ids)
    # Nothing else follows: every message was in that one group.
    time.sleep(1)
    assert len(replies(live_stack, conversation_id)) == 1


CONCURRENT = (
    single_message,
    burst_at_0_2_4_seconds,
    messages_every_4_seconds_for_16_seconds,
    two_bursts_7_seconds_apart,
    held_message_joins_its_conversation,
    held_message_expires,
    twenty_five_concurrent_messages,
)


class Scenarios:
    """Scenarios running in threads; `wait(scenario)` returns when it ended, raising what it
    raised."""

    def __init__(self, futures):
        self.futures = futures

    def wait(self, scenario):
        return self.futures[scenario.__name__].result(timeout=90)

    def wait_all(self):
        for future in self.futures.values():
            future.exception(timeout=90)


@pytest.fixture(scope="module")
def scenarios(request, live_stack):
    """The CONCURRENT scenarios of this module's selected tests, started together on the live
    stack; all of them have ended when it is torn down."""
    selected = {
        item.name.removeprefix("test_")
        for item in request.session.items
        if getattr(item, "module", None) is request.module
    }
    chosen = [s for s in CONCURRENT if s.__name__ in selected]
    with ThreadPoolExecutor(max(len(chosen), 1), thread_name_prefix="scenario") as pool:
        yield Scenarios({s.__name__: pool.submit(s, live_stack) for s in chosen})


def test_single_message(scenarios):
    scenarios.wait(single_message)


def test_burst_at_0_2_4_seconds(scenarios):
    scenarios.wait(burst_at_0_2_4_seconds)


def test_messages_every_4_seconds_for_16_seconds(scenarios):
    scenarios.wait(messages_every_4_seconds_for_16_seconds)


def test_two_bursts_7_seconds_apart(scenarios):
    scenarios.wait(two_bursts_7_seconds_apart)


def test_held_message_joins_its_conversation(scenarios):
    scenarios.wait(held_message_joins_its_conversation)


def test_held_message_expires(scenarios):
    scenarios.wait(held_message_expires)


def test_twenty_five_concurrent_messages(scenarios):
    scenarios.wait(twenty_five_concurrent_messages)


def test_worker_killed_mid_flush_the_group_is_still_answered_once(live_stack, scenarios):
    scenarios.wait_all()
    conversation_id = open_conversation(live_stack)
    dsn = database_url(live_stack.env["DATABASE_URL"]).replace("+psycopg2", "")
    message_id, _ = send(live_stack, conversation_id)
    blocker = psycopg2.connect(dsn)
    try:
        with blocker.cursor() as cur:
            # Hold the conversation row, so the flush (due in 5 s) stops inside its transaction.
            cur.execute("SELECT 1 FROM conversations WHERE id = %s FOR UPDATE", (conversation_id,))

            def flush_waiting():
                # A fresh connection each time: pg_stat_activity is frozen within a transaction.
                with closing(psycopg2.connect(dsn)) as probe, probe.cursor() as cur2:
                    cur2.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND datname = current_database() AND query LIKE '%%FOR UPDATE%%'"
                    )
                    return cur2.fetchone()[0] > 0

            wait_for(flush_waiting, timeout=15)
            live_stack.kill_workers()
        blocker.rollback()
    finally:
        blocker.close()
    live_stack.start_workers()
    [reply] = wait_replies(live_stack, conversation_id, 1, timeout=30)
    assert reply_ids(reply) == [message_id]
    time.sleep(2)
    assert len(replies(live_stack, conversation_id)) == 1
