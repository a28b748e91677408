"""Reply delivery watched from the console, in headless Chromium: the simulator's Receiver
section drives the reference receiver (scripts/receiver.py, a real process with its control
API) and a reply's delivery badge follows, retrying -> delivered and dead -> retry -> delivered.

For this module the live stack's processes run again with delivery on (REPLY_WEBHOOK_URL at
the receiver, a delivery worker, short retry pauses), on the same database, Redis and port;
they are put back as they were afterwards, for the tests that follow.
"""

import pytest
from playwright.sync_api import expect

from tests.e2e.test_console import browser, open_console  # noqa: F401 (browser: a fixture)
from tests.integration.test_receiver import SECRET, Receiver

pytestmark = pytest.mark.browser
# Retries a second apart at most: the badge moves within seconds, not the default 30 s.
DELIVERY_ENV = {
    "REPLY_WEBHOOK_SECRET": SECRET,
    "DELIVERY_MAX_BACKOFF_SECONDS": "1",
    "DELIVERY_INTERVAL": "1",
    "DELIVERY_TIMEOUT_SECONDS": "2",
}
DELIVERED_MS = 20_000


@pytest.fixture(scope="module")
def receiver(live_stack):
    """The reference receiver with its control API, allowing the live stack's console."""
    receiver = Receiver(
        "--control-port", "0", "--allow-origin", live_stack.base_url, secret=SECRET
    ).listening()
    try:
        yield receiver
    finally:
        receiver.stop()
        for stream in (receiver.process.stdout, receiver.process.stderr):
            stream.close()


@pytest.fixture(scope="module")
def delivering_stack(live_stack, receiver):
    """The live stack's processes started again with delivery to `receiver`; afterwards, as
    they were."""
    original = live_stack.env
    live_stack.stop()
    live_stack.env = {**original, **DELIVERY_ENV, "REPLY_WEBHOOK_URL": receiver.url}
    try:
        live_stack.start(workers=1, schedulers=1)
        live_stack.start_delivery_workers(1)
        yield live_stack
    finally:
        live_stack.stop()
        live_stack.env = original
        live_stack.start()


@pytest.fixture
def page(browser, delivering_stack):  # noqa: F811 (browser: the imported fixture)
    """A fresh context with the console open, its stream live and its Receiver section
    watching `receiver`."""
    context = browser.new_context(
        viewport={"width": 1280, "height": 900}, base_url=delivering_stack.base_url
    )
    context.set_default_timeout(10_000)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


def watch_receiver(page, receiver):
    """Open the Receiver section and point it at `receiver`'s control API."""
    open_console(page)
    section = page.get_by_test_id("receiver")
    section.locator("summary").click()
    page.get_by_test_id("receiver-url").fill(receiver.control)
    page.get_by_test_id("receiver-url").press("Tab")  # committed on change, as typed URLs are
    expect(page.get_by_test_id("receiver-status")).to_have_attribute("data-state", "up")


def one_reply(page, text):
    """A new conversation, one message and the close that answers it at once; the reply and
    the message's id."""
    page.get_by_test_id("sim-new-conversation").click()
    expect(page.get_by_test_id("status-badge")).to_have_attribute("data-status", "OPEN")
    page.get_by_test_id("sim-message-input").fill(text)
    page.get_by_test_id("sim-send-message").click()
    inbound = page.get_by_test_id("message-inbound")
    expect(inbound).to_have_count(1)
    page.get_by_test_id("sim-close").click()
    reply = page.get_by_test_id("message-outbound")
    expect(reply).to_have_count(1)
    return reply, inbound.get_attribute("data-message-id")


def received(page, reply_id, event="received"):
    return page.locator(
        f'[data-testid="receiver-event"][data-event="{event}"][data-reply-id="{reply_id}"]'
    )


def test_a_reply_retries_while_the_receiver_is_down_and_is_delivered_once_it_is_back(
    page, receiver
):
    watch_receiver(page, receiver)
    page.get_by_test_id("receiver-down").click()
    expect(page.get_by_test_id("receiver-status")).to_have_attribute("data-state", "down")
    expect(page.get_by_test_id("receiver-down")).to_have_text("Come back")

    reply, message_id = one_reply(page, "Is my order on its way?")
    reply_id = reply.get_attribute("data-message-id")
    delivery = reply.get_by_test_id("delivery")
    # Refused connections: the service keeps trying, and the badge says so live.
    expect(reply.get_by_test_id("delivery-badge")).to_contain_text("Retrying")
    expect(delivery).to_have_attribute("data-status", "pending")
    expect(reply.get_by_test_id("delivery-detail")).to_contain_text("connection refused")

    page.get_by_test_id("receiver-down").click()
    expect(page.get_by_test_id("receiver-status")).to_have_attribute("data-state", "up")
    expect(delivery).to_have_attribute("data-status", "delivered", timeout=DELIVERED_MS)
    expect(reply.get_by_test_id("delivery-badge")).to_have_text("Delivered")
    # The receiver got it, signature verified, once: the reply answering the message.
    expect(received(page, reply_id)).to_have_count(1)
    expect(received(page, reply_id)).to_contain_text("verified")
    expect(received(page, reply_id)).to_contain_text(message_id)
    expect(received(page, reply_id, "duplicate")).to_have_count(0)


def test_a_reply_rejected_is_dead_until_retried_from_the_console(page, receiver):
    watch_receiver(page, receiver)
    page.get_by_test_id("receiver-reject").click()
    expect(page.get_by_test_id("receiver-summary")).to_contain_text(
        "failing the next 1 with HTTP 400"
    )

    reply, _ = one_reply(page, "Can I change the address?")
    reply_id = reply.get_attribute("data-message-id")
    delivery = reply.get_by_test_id("delivery")
    # A 400 is not retried: dead at once, until an operator retries it.
    expect(delivery).to_have_attribute("data-status", "dead", timeout=DELIVERED_MS)
    expect(reply.get_by_test_id("delivery-badge")).to_have_text("Not delivered · 1 attempt")
    expect(reply.get_by_test_id("delivery-detail")).to_contain_text("HTTP 400")
    expect(received(page, reply_id, "failed")).to_contain_text("Failed 400")
    expect(page.get_by_test_id("receiver-summary")).to_have_text("Up · accepting every delivery")

    reply.get_by_test_id("delivery-retry").click()
    expect(delivery).to_have_attribute("data-status", "delivered", timeout=DELIVERED_MS)
    expect(received(page, reply_id)).to_have_count(1)
