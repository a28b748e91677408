"""Settings read from the environment."""

import pytest

from service.config import ConfigError, load_config


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, True), ("", True), ("true", True), ("1", True), ("FALSE", False), ("off", False)],
)
def test_prepared_statements_flag(raw, expected):
    env = {} if raw is None else {"DB_PREPARED_STATEMENTS": raw}
    assert load_config("/tmp", env)["DB_PREPARED_STATEMENTS"] is expected


def test_a_flag_that_is_not_a_boolean_is_refused():
    with pytest.raises(ConfigError, match="DB_PREPARED_STATEMENTS"):
        load_config("/tmp", {"DB_PREPARED_STATEMENTS": "maybe"})


def test_without_sentinels_redis_url_names_the_server():
    assert load_config("/tmp", {})["REDIS_SENTINEL"] is None
    assert load_config("/tmp", {"REDIS_SENTINELS": " , "})["REDIS_SENTINEL"] is None


def test_sentinel_addresses_master_and_password():
    env = {
        "REDIS_SENTINELS": "s1:26379, 10.0.0.2:26380,[::1]:26381,s4",
        "REDIS_SENTINEL_PASSWORD": "pw",
    }
    assert load_config("/tmp", env)["REDIS_SENTINEL"] == {
        "sentinels": [("s1", 26379), ("10.0.0.2", 26380), ("::1", 26381), ("s4", 26379)],
        "master": "mymaster",
        "password": "pw",
    }
    env["REDIS_SENTINEL_MASTER"] = "conversations"
    assert load_config("/tmp", env)["REDIS_SENTINEL"]["master"] == "conversations"


@pytest.mark.parametrize(
    "entry", ["s1:port", "s1:0", "s1:70000", ":26379", "[::1]:x", "redis://s1:26379"]
)
def test_a_malformed_sentinel_address_is_refused(entry):
    with pytest.raises(ConfigError, match="REDIS_SENTINELS"):
        load_config("/tmp", {"REDIS_SENTINELS": entry})
