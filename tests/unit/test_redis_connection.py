"""The Redis client each process builds from its settings (no server is contacted here)."""

import redis
import redis.sentinel

from service.extensions import connect_redis

SENTINEL = {"sentinels": [("127.0.0.1", 1)], "master": "conversations", "password": "spw"}


def test_redis_url_alone_names_the_server_and_its_database():
    client = connect_redis({"REDIS_URL": "redis://:pw@example.org:6390/4"}, socket_timeout=2)
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"], kwargs["password"]) == (
        "example.org",
        6390,
        4,
        "pw",
    )
    assert kwargs["protocol"] == 2 and kwargs["socket_timeout"] == 2


def test_with_sentinels_the_master_comes_from_them_and_the_rest_from_redis_url():
    config = {"REDIS_URL": "redis://user:pw@ignored:6390/4", "REDIS_SENTINEL": SENTINEL}
    client = connect_redis(config, socket_timeout=2)
    pool = client.connection_pool
    assert isinstance(pool, redis.sentinel.SentinelConnectionPool)
    assert pool.service_name == "conversations" and pool.is_master
    kwargs = pool.connection_kwargs
    assert (kwargs["db"], kwargs["username"], kwargs["password"]) == (4, "user", "pw")
    assert "host" not in kwargs and kwargs["protocol"] == 2 and kwargs["socket_timeout"] == 2
    (sentinel,) = pool.sentinel_manager.sentinels
    assert sentinel.connection_pool.connection_kwargs["password"] == "spw"


def test_with_sentinels_no_master_known_is_a_connection_error():
    config = {"REDIS_URL": "redis://ignored/0", "REDIS_SENTINEL": SENTINEL}
    client = connect_redis(config)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:  # what the app answers 503 to
        assert isinstance(exc, redis.sentinel.MasterNotFoundError)
    else:
        raise AssertionError("a master was found on a closed port")
