"""The live channel's name: one per Redis database index unless LIVE_CHANNEL names it."""

import pytest

from service.config import load_config
from service.infra.notices import default_channel


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://localhost:6379/0", "conversations:live:db0"),
        ("redis://localhost:6379", "conversations:live:db0"),
        ("redis://:secret@redis.internal:6380/7", "conversations:live:db7"),
        ("rediss://redis.internal/12", "conversations:live:db12"),
        ("unix:///run/redis.sock?db=3", "conversations:live:db3"),
    ],
)
def test_channel_follows_the_database_index(url, expected):
    assert default_channel(url) == expected


@pytest.mark.parametrize(
    ("raw", "expected"), [(None, None), ("", None), ("  ", None), (" team-a:live ", "team-a:live")]
)
def test_live_channel_setting(raw, expected):
    env = {} if raw is None else {"LIVE_CHANNEL": raw}
    assert load_config("/tmp", env)["LIVE_CHANNEL"] == expected
