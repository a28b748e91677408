"""The web console in headless Chromium, against the live stack (real web, worker, scheduler).

Uses Debian's /usr/bin/chromium through Playwright's sync API; no browser is downloaded.
Every wait is one of Playwright's auto-waiting `expect(...)` assertions with a timeout.
"""

import os
import re
from pathlib import Path

import pytest

from tests.helpers import new_conversation, new_id, new_message

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
DIST_INDEX = ROOT / "console" / "dist" / "index.html"
# Tests never write tracked files (tests/conftest.py fails a run that does): the README's
# docs/console.png is refreshed by copying this one over it by hand. CONSOLE_SCREENSHOT moves it.
SCREENSHOT = Path(os.environ.get("CONSOLE_SCREENSHOT") or ROOT / "instance" / "console.png")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Quiet window (5 s) + at most 1 s of lateness + the console's refresh, with a margin.
REPLY_TIMEOUT_MS = 15_000

_missing = [str(p) for p in (CHROMIUM, DIST_INDEX) if not p.is_file()]
if _missing:
    _why = f"browser tests need {' and '.join(_missing)} (apt-get install chromium; make console)"
    if os.environ.get("CI"):
        pytest.fail(_why, pytrace=False)
    pytest.skip(_why, allow_module_level=True)

from playwright.sync_api import expect, sync_playwright  # noqa: E402

# Records what the page's live stream receives, to tell live updates from fallback reloads. The
# console reads the stream over fetch (so it can send an API token: console/src/lib/sse.ts), so
# the body of each /events/stream answer is copied (tee) and its events parsed here.
RECORD_STREAM = """
(() => {
  const originalFetch = window.fetch.bind(window);
  window.__streamEvents = [];
  const record = async (body) => {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\\r\\n?/g, "\\n");
      let end;
      while ((end = buffer.indexOf("\\n\\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let type = "message";
        const data = [];
        for (const line of block.split("\\n")) {
          if (line.startsWith("event:")) type = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (data.length) window.__streamEvents.push({ type, data: data.join("\\n") });
      }
    }
  };
  window.fetch = async (input, init) => {
    const response = await originalFetch(input, init);
    if (!String(input).includes("/events/stream") || !response.ok || !response.body) {
      return response;
    }
    const [copy, page] = response.body.tee();
    record(copy).catch(() => {});
    const { status, statusText, headers } = response;
    return new Response(page, { status, statusText, headers });
  };
})();
"""


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser, live_stack):
    """A fresh context (no cookies, no storage) with the console open and its stream live."""
    context = browser.new_context(
        viewport={"width": 1280, "height": 800}, base_url=live_stack.base_url
    )
    context.set_default_timeout(10_000)
    context.add_init_script(RECORD_STREAM)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


def open_console(page, path="/ui/"):
    page.goto(path)
    expect(page.get_by_test_id("live-indicator")).to_have_attribute("data-status", "live")
    # Set once; a reload would lose it.
    page.evaluate("window.__sameDocument = true")


def stream_events(page, name):
    return page.evaluate(
        "(name) => window.__streamEvents.filter(e => e.type === name).map(e => JSON.parse(e.data))",
        name,
    )


def test_burst_reply_and_close_update_live(page, live_stack):
    open_console(page)
    page.get_by_test_id("sim-new-conversation").click()
    chat = page.get_by_test_id("chat")
    badge = page.get_by_test_id("status-badge")
    expect(badge).to_have_attribute("data-status", "OPEN")
    conversation_id = chat.get_attribute("data-conversation-id")
    expect(page.get_by_test_id("sim-status")).to_have_text("201")
    row = page.locator(
        f'[data-testid="conversation-item"][data-conversation-id="{conversation_id}"]'
    )
    expect(row).to_have_attribute("data-status", "OPEN")

    page.get_by_test_id("sim-message-input").fill("Olá, preciso de ajuda")
    page.get_by_test_id("sim-burst").click()
    countdown = page.get_by_test_id("pending-countdown")
    expect(countdown).to_be_visible()
    expect(countdown).to_contain_text(re.compile(r"Reply (in \d+\.\d s|due)"))
    inbound = page.get_by_test_id("message-inbound")
    expect(inbound).to_have_count(3)
    expect(inbound.last).to_contain_text("Olá, preciso de ajuda 3/3")
    expect(page.get_by_test_id("pending-tag")).to_have_count(3)
    ids = [inbound.nth(i).get_attribute("data-message-id") for i in range(3)]

    # The reply comes from a worker; the page learns of it from the event stream.
    outbound = page.get_by_test_id("message-outbound")
    expect(outbound).to_have_count(1, timeout=REPLY_TIMEOUT_MS)
    expect(outbound.locator(".bubble__content")).to_have_text(
        "Mensagens recebidas:\n" + "".join(f"{i}\n" for i in ids), use_inner_text=True
    )
    expect(countdown).to_have_count(0)
    expect(page.get_by_test_id("pending-tag")).to_have_count(0)
    replies = [
        e for e in stream_events(page, "reply.created") if e["conversation_id"] == conversation_id
    ]
    assert len(replies) == 1, replies
    assert page.evaluate("window.__sameDocument") is True
    api_reply = [
        m for m in live_stack.conversation(conversation_id)["messages"] if m["type"] == "OUTBOUND"
    ]
    expect(outbound).to_have_attribute("data-message-id", api_reply[0]["id"])

    expect(row).to_contain_text("4 messages")  # the list refreshed live too

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))

    page.get_by_test_id("sim-close").click()
    expect(badge).to_have_attribute("data-status", "CLOSED")
    expect(badge).to_have_text("Closed")
    expect(row).to_have_attribute("data-status", "CLOSED")
    expect(page.get_by_test_id("sim-status")).to_have_text("200")
    assert page.evaluate("window.__sameDocument") is True
    assert live_stack.conversation(conversation_id)["status"] == "CLOSED"


def test_out_of_order_message_is_held_then_joins(page):
    open_console(page)
    page.get_by_test_id("sim-delay").fill("3")
    page.get_by_test_id("sim-message-input").fill("Chegou antes da conversa")
    page.get_by_test_id("sim-out-of-order").click()

    badge = page.get_by_test_id("status-badge")
    expect(badge).to_have_attribute("data-status", "MISSING")
    expect(page.get_by_test_id("chat-not-found")).to_be_visible()
    expect(page.get_by_test_id("sim-status")).to_have_text("202")
    held = page.get_by_test_id("held-item")
    expect(held).to_have_count(1)
    expect(held).to_have_attribute("data-status", "HELD")
    expect(held).to_contain_text("Chegou antes da conversa")
    expect(held).to_contain_text("expires in")
    message_id = held.get_attribute("data-message-id")
    conversation_id = page.get_by_test_id("chat").get_attribute("data-conversation-id")
    overview = page.get_by_test_id("held-overview").locator(
        f'[data-conversation-id="{conversation_id}"]'
    )
    expect(overview).to_have_count(1)

    # NEW_CONVERSATION follows 3 s later: the held message joins it and the hold is gone.
    expect(badge).to_have_attribute("data-status", "OPEN", timeout=10_000)
    expect(page.get_by_test_id("chat-not-found")).to_have_count(0)
    expect(page.get_by_test_id("held-list")).to_have_count(0)
    inbound = page.get_by_test_id("message-inbound")
    expect(inbound).to_have_count(1)
    expect(inbound).to_have_attribute("data-message-id", message_id)
    expect(page.get_by_test_id("message-outbound")).to_have_count(1, timeout=REPLY_TIMEOUT_MS)


def test_held_message_expires_when_its_conversation_never_comes(page, live_stack):
    conversation_id, message_id = new_id(), new_id()
    open_console(page, f"/ui/#/conversations/{conversation_id}")
    expect(page.get_by_test_id("chat-not-found")).to_be_visible()
    response = live_stack.post(new_message(message_id, conversation_id, content="Sem conversa"))
    assert response.status_code == 202, response.text

    held = page.get_by_test_id("held-item")
    expect(held).to_have_attribute("data-status", "HELD")
    expect(held).to_have_attribute("data-message-id", message_id)
    # The hold is 6 s; the scheduler drops it and the page hears message.expired.
    expect(held).to_have_attribute("data-status", "EXPIRED", timeout=REPLY_TIMEOUT_MS)
    expect(held).to_contain_text("expired at")
    expect(page.get_by_test_id("status-badge")).to_have_attribute("data-status", "MISSING")


def test_unknown_conversation_shows_not_created_yet(page):
    open_console(page, f"/ui/#/conversations/{new_id()}")
    expect(page.get_by_test_id("status-badge")).to_have_attribute("data-status", "MISSING")
    expect(page.get_by_test_id("status-badge")).to_have_text("Not created yet")
    expect(page.get_by_test_id("chat-not-found")).to_contain_text(
        "Conversation not found — not created yet."
    )
    expect(page.get_by_test_id("chat-error")).to_have_count(0)
    expect(page.get_by_test_id("held-list")).to_have_count(0)
    expect(page.get_by_test_id("chat-empty")).to_have_count(0)


def test_service_errors_show_unreachable_and_recover(page, live_stack):
    conversation_id = new_id()
    assert live_stack.post(new_conversation(conversation_id)).status_code == 201

    def unavailable(route):
        route.fulfill(
            status=503,
            headers={"Retry-After": "1"},
            json={
                "code": 503,
                "status": "Service Unavailable",
                "error": "service_unavailable",
                "message": "Database unreachable.",
            },
        )

    page.route(re.compile(r"/conversations/"), unavailable)
    open_console(page, f"/ui/#/conversations/{conversation_id}")
    expect(page.get_by_test_id("chat-error")).to_contain_text("Service unreachable.")
    expect(page.get_by_test_id("list-error")).to_contain_text("Service unreachable.")
    expect(page.get_by_test_id("status-badge")).to_have_attribute("data-status", "UNKNOWN")
    expect(page.get_by_test_id("chat-not-found")).to_have_count(0)

    page.unroute(re.compile(r"/conversations/"))
    page.get_by_test_id("chat-error").get_by_role("button", name="Retry").click()
    expect(page.get_by_test_id("chat-error")).to_have_count(0)
    expect(page.get_by_test_id("status-badge")).to_have_attribute("data-status", "OPEN")
    expect(page.get_by_test_id("chat-empty")).to_be_visible()
    page.get_by_test_id("list-error").get_by_role("button", name="Retry").click()
    expect(page.get_by_test_id("list-error")).to_have_count(0)
    row = page.locator(
        f'[data-testid="conversation-item"][data-conversation-id="{conversation_id}"]'
    )
    expect(row).to_be_visible()
