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
