"""The delivery settings (service.config): off unless REPLY_WEBHOOK_URL is set, and a set URL
needs well-formed secrets."""

import pytest

from service.config import ConfigError, load_config

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_delivery_is_off_by_default():
    config = load_config("/tmp", {})
    assert config["REPLY_WEBHOOK_URL"] is None
    assert config["REPLY_WEBHOOK_SECRETS"] == []
    assert (
        config["DELIVERY_TIMEOUT_SECONDS"],
        config["DELIVERY_RETRY_HOURS"],
        config["DELIVERY_MAX_BACKOFF_SECONDS"],
        config["DELIVERY_INTERVAL"],
    ) == (5, 24, 30, 1)


def test_several_secrets_for_rotation():
    config = load_config(
        "/tmp",
        {
            "REPLY_WEBHOOK_URL": "https://example.com/hooks",
            "REPLY_WEBHOOK_SECRET": f" {SECRET} ,whsec_b2xk",
        },
    )
    assert config["REPLY_WEBHOOK_URL"] == "https://example.com/hooks"
    assert config["REPLY_WEBHOOK_SECRETS"] == [SECRET, "whsec_b2xk"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "REPLY_WEBHOOK_SECRET is required"),
        ({"REPLY_WEBHOOK_SECRET": "hunter2"}, "whsec_"),
        ({"REPLY_WEBHOOK_SECRET": "whsec_"}, "whsec_"),
        ({"REPLY_WEBHOOK_SECRET": "whsec_not base64!"}, "whsec_"),
    ],
)
def test_a_url_needs_well_formed_secrets(env, message):
    with pytest.raises(ConfigError, match=message):
        load_config("/tmp", {"REPLY_WEBHOOK_URL": "http://127.0.0.1:9000/", **env})


def test_the_url_must_be_http():
    with pytest.raises(ConfigError, match="REPLY_WEBHOOK_URL"):
        load_config("/tmp", {"REPLY_WEBHOOK_URL": "ftp://x", "REPLY_WEBHOOK_SECRET": SECRET})


@pytest.mark.parametrize(
    "name",
    ["DELIVERY_TIMEOUT_SECONDS", "DELIVERY_RETRY_HOURS", "DELIVERY_MAX_BACKOFF_SECONDS"],
)
def test_durations_must_be_positive(name):
    with pytest.raises(ConfigError, match=name):
        load_config("/tmp", {name: "0"})
