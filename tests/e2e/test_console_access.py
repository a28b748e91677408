"""The console against a web process started with API_TOKEN, in headless Chromium: it asks
for the token, shows the data with it, keeps it for the tab only, and its live stream sends it.

A second gunicorn, with two API tokens (a rotation), runs beside the live stack's own web
process, on the same database and Redis, and so with the same workers and live events.
"""

import pytest
import requests
from playwright.sync_api import expect

from tests.e2e.test_console import ROOT, browser  # noqa: F401 (browser: a fixture)
from tests.helpers import new_conversation, new_id
from tests.stack import free_port, running_web

pytestmark = pytest.mark.browser
TOKENS = ("old-token", "new-token")


@pytest.fixture(scope="module")
def guarded_web(live_stack):
    """A web process of the live stack's deployment, started with API_TOKEN."""
    env = {**live_stack.env, "PORT": str(free_port()), "API_TOKEN": " , ".join(TOKENS)}
    with running_web(env, logs=ROOT / "instance" / "e2e-logs" / "access") as stack:
        yield stack


@pytest.fixture
def context(browser, guarded_web):  # noqa: F811 (browser: the imported fixture)
    """A fresh browser profile: no cookies, no storage."""
    context = browser.new_context(
        viewport={"width": 1280, "height": 800}, base_url=guarded_web.base_url
    )
    context.set_default_timeout(10_000)
    try:
        yield context
    finally:
        context.close()


def row(page, conversation_id):
    return page.locator(
        f'[data-testid="conversation-item"][data-conversation-id="{conversation_id}"]'
    )


def enter_token(page, token):
    page.get_by_test_id("token-input").fill(token)
    page.get_by_test_id("token-submit").click()


def test_the_guarded_server_refuses_reads_without_a_token(guarded_web):
    url = guarded_web.base_url
    response = requests.get(f"{url}/conversations/", timeout=10)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert requests.get(f"{url}/events/stream", timeout=10).status_code == 401
    for token in TOKENS:
        headers = {"Authorization": f"Bearer {token}"}
        assert requests.get(f"{url}/held/", headers=headers, timeout=10).status_code == 200
    assert requests.get(f"{url}/ui/", timeout=10).status_code == 200
    assert requests.get(f"{url}/healthz", timeout=10).status_code == 200


def test_console_asks_for_the_token_and_keeps_it_for_the_tab(context, guarded_web):
    conversation_id = new_id()
    assert guarded_web.post(new_conversation(conversation_id)).status_code == 201

    page = context.new_page()
    page.goto("/ui/")
    prompt = page.get_by_test_id("token-prompt")
    expect(prompt).to_be_visible()
    expect(page.get_by_test_id("token-refused")).to_have_count(0)
    expect(page.get_by_test_id("list-error")).to_contain_text("Access token required")
    expect(page.get_by_test_id("live-indicator")).to_have_attribute("data-status", "reconnecting")

    enter_token(page, "not-a-token")
    expect(page.get_by_test_id("token-refused")).to_be_visible()

    enter_token(page, TOKENS[1])
    expect(prompt).to_have_count(0)
    expect(row(page, conversation_id)).to_be_visible()
    expect(page.get_by_test_id("list-error")).to_have_count(0)
    expect(page.get_by_test_id("live-indicator")).to_have_attribute("data-status", "live")

    # The stream carries the token: a conversation created now appears with no reload.
    later = new_id()
    assert guarded_web.post(new_conversation(later)).status_code == 201
    expect(row(page, later)).to_be_visible()

    # Kept for the tab: a reload does not ask again; nothing is in the lasting storage.
    page.reload()
    expect(row(page, later)).to_be_visible()
    expect(page.get_by_test_id("live-indicator")).to_have_attribute("data-status", "live")
    expect(prompt).to_have_count(0)
    assert page.evaluate("sessionStorage.length") == 1
    assert page.evaluate("localStorage.length") == 0

    # Another tab of the same browser profile does not have it.
    other = context.new_page()
    other.goto("/ui/")
    expect(other.get_by_test_id("token-prompt")).to_be_visible()
    enter_token(other, TOKENS[0])
    expect(row(other, later)).to_be_visible()
