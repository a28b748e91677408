"""The hot path's own Redis connection per thread (`redis_client.thread_client`): it must fail
and recover exactly as a pooled connection does."""

import threading

import pytest
import redis.exceptions

from service.extensions import redis_client
from service.infra.buffer import keys
from service.pipeline import groups
from tests.faults.deps import StallProxy
from tests.helpers import new_id


@pytest.fixture
def proxied_app(make_app, private_redis):
    """An app whose Redis is the test's own server behind a proxy that can stall."""
    proxy = StallProxy(private_redis.port, name="redis-proxy")
    app = make_app(REDIS_URL=f"redis://127.0.0.1:{proxy.port}/0")
    with app.app_context():
        yield app, proxy
    proxy.close()


def test_a_timed_out_buffer_write_leaves_no_answer_for_the_next_one(proxied_app, private_redis):
    """After a call times out, the thread's connection is dropped: the late answer, once the
    path moves again, is never read as the answer of the thread's next call."""
    _, proxy = proxied_app
    first, second = new_id(), new_id()
    assert groups.add_to_group(first, [(new_id(), 1_000_000)], 1_000_000).newest_us == 1_000_000

    proxy.stall()
    with pytest.raises(redis.exceptions.TimeoutError):
        groups.add_to_group(first, [(new_id(), 2_000_000)], 2_000_000)
    proxy.resume()

    added = groups.add_to_group(second, [(new_id(), 9_000_000)], 9_000_000)
    assert added.newest_us == 9_000_000
    assert added.must_schedule
    buffered = private_redis.client().zrange(keys(second)[0], 0, -1, withscores=True)
    assert [score for _, score in buffered] == [9_000_000]


def test_the_buffer_is_written_again_after_redis_restarts(proxied_app, private_redis):
    """A restart breaks the thread's connection; the next call is retried once on a new one,
    so the message after a restart is not failed for it."""
    conversation_id = new_id()
    groups.add_to_group(conversation_id, [(new_id(), 1_000_000)], 1_000_000)

    private_redis.kill()
    private_redis.start()

    added = groups.add_to_group(conversation_id, [(new_id(), 2_000_000)], 2_000_000)
    assert added.newest_us == 2_000_000
    assert added.must_schedule  # the restart emptied the buffer and its armed flush


def test_each_thread_and_each_app_has_its_own_connection(make_app):
    one, other = make_app(), make_app()
    seen = {}

    def connection_of(name, app):
        with app.app_context():
            redis_client.thread_client.ping()
            seen[name] = redis_client.thread_client.connection

    connection_of("main", one)
    connection_of("main again", one)
    connection_of("other app", other)
    thread = threading.Thread(target=connection_of, args=("thread", one))
    thread.start()
    thread.join(10)

    assert seen["main"] is seen["main again"]
    assert len({id(seen[name]) for name in ("main", "other app", "thread")}) == 3
