"""Operating the outbox (issue 13, "Operating it"): `GET /deliveries/`, one delivery, the
retry of dead ones over the API and the CLI, the read token, each reply's delivery state in
`GET /conversations/{id}/`, and the outbox gauges of /metrics.

Deliveries in the states a test needs are written straight into the `deliveries` table (the
pipeline that moves them is tested in its own files); the reads run on PostgreSQL and on the
embedded SQLite default."""

import base64
import uuid
from datetime import timedelta
from types import SimpleNamespace

import pytest

from service.domain import clock
from service.domain.delivery import DEAD, DELIVERED, PENDING
from service.domain.rules import INBOUND, OPEN, OUTBOUND
from service.extensions import db
from service.infra.models import Conversation, Delivery, Message
from tests.helpers import error

DELIVERY_KEYS = {
    "reply_id",
    "conversation_id",
    "created_at",
    "status",
    "attempts",
    "next_attempt_at",
    "last_attempt_at",
    "last_status",
    "last_error",
    "delivered_at",
}
STATE_KEYS = DELIVERY_KEYS - {"reply_id", "conversation_id", "created_at"}


@pytest.fixture
def store(app_on_each_backend):
    """An app (in its context) on the test PostgreSQL database, then on a migrated SQLite
    file."""
    return app_on_each_backend


def now():
    return clock.to_datetime(clock.now_us())


def make_conversation(conversation_id=None):
    """A conversation row; returns its uuid."""
    conversation_id = conversation_id or uuid.uuid4()
    moment = now()
    db.session.add(
        Conversation(id=conversation_id, status=OPEN, created_at=moment, updated_at=moment)
    )
    db.session.commit()
    return conversation_id


def make_reply(conversation_id, status=None, at=None, **fields):
    """An inbound message and its OUTBOUND reply stored `at` (default now), with a delivery in
    `status` (none when None); returns the reply's uuid."""
    at = at or now()
    reply_id, inbound_id = uuid.uuid4(), uuid.uuid4()
    db.session.add(
        Message(
            id=reply_id,
            conversation_id=conversation_id,
            type=OUTBOUND,
            content=f"Mensagens recebidas:\n{inbound_id}\n",
            timestamp=at,
            received_at=at,
            generated=True,
        )
    )
    db.session.flush()
    db.session.add(
        Message(
            id=inbound_id,
            conversation_id=conversation_id,
            type=INBOUND,
            content="Olá",
            timestamp=at - timedelta(seconds=5),
            received_at=at - timedelta(seconds=5),
            reply_id=reply_id,
        )
    )
    if status is not None:
        defaults = {
            PENDING: {"next_attempt_at": at},
            DELIVERED: {
                "attempts": 1,
                "last_status": 200,
                "delivered_at": at,
                "last_attempt_at": at,
            },
            DEAD: {
                "attempts": 1,
                "last_status": 400,
                "last_error": "HTTP 400: not retried",
                "last_attempt_at": at,
            },
        }[status]
        db.session.add(
            Delivery(
                reply_id=reply_id,
                conversation_id=conversation_id,
                status=status,
                created_at=at,
                retry_from=at,
                **{"attempts": 0, **defaults, **fields},
            )
        )
    db.session.commit()
    return reply_id


def stored(reply_id):
    """The delivery's row as it is in the database now (a detached snapshot)."""
    db.session.expire_all()
    row = db.session.get(Delivery, reply_id)
    snapshot = SimpleNamespace(**{c.key: getattr(row, c.key) for c in Delivery.__table__.c})
    db.session.rollback()
    return snapshot


def get_json(client, url, status=200, **kwargs):
    response = client.get(url, **kwargs)
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    return response.get_json()


def ids(page):
    return [item["reply_id"] for item in page["items"]]


# --- GET /deliveries/ ------------------------------------------------------------------


def test_list_is_empty_without_deliveries(store):
    client = store.test_client()
    assert get_json(client, "/deliveries/") == {"items": [], "next_cursor": None}
    assert get_json(client, "/deliveries") == {"items": [], "next_cursor": None}


def test_list_newest_first_with_filters(store):
    first, second = make_conversation(), make_conversation()
    start = now()
    old = make_reply(first, DELIVERED, at=start - timedelta(minutes=3))
    dead = make_reply(first, DEAD, at=start - timedelta(minutes=2))
    pending = make_reply(second, PENDING, at=start - timedelta(minutes=1), attempts=3)
    make_reply(second)  # a reply without a delivery is not listed
    client = store.test_client()

    page = get_json(client, "/deliveries/")
    assert ids(page) == [str(pending), str(dead), str(old)]
    assert page["next_cursor"] is None
    assert all(set(item) == DELIVERY_KEYS for item in page["items"])
    assert page["items"][0]["attempts"] == 3
    assert page["items"][0]["conversation_id"] == str(second)
    assert page["items"][1] == {
        "reply_id": str(dead),
        "conversation_id": str(first),
        "created_at": (start - timedelta(minutes=2)).isoformat(),
        "status": "dead",
        "attempts": 1,
        "next_attempt_at": None,
        "last_attempt_at": (start - timedelta(minutes=2)).isoformat(),
        "last_status": 400,
        "last_error": "HTTP 400: not retried",
        "delivered_at": None,
    }

    assert ids(get_json(client, "/deliveries/?status=dead")) == [str(dead)]
    assert ids(get_json(client, "/deliveries/?status=pending")) == [str(pending)]
    assert ids(get_json(client, f"/deliveries/?conversation_id={first}")) == [str(dead), str(old)]
    # Any form of id the webhook takes.
    braced = "{" + first.hex.upper() + "}"
    assert ids(get_json(client, f"/deliveries/?conversation_id={braced}&status=delivered")) == [
        str(old)
    ]


def test_list_pages_with_the_cursor(store):
    conversation = make_conversation()
    moment = now()
    # Ties on created_at are broken by the reply id, so no row is skipped or repeated.
    made = [make_reply(conversation, PENDING, at=moment) for _ in range(3)]
    made += [make_reply(conversation, DEAD, at=moment - timedelta(seconds=1)) for _ in range(2)]
    expected = [str(r) for r in sorted(made[:3], reverse=True)]
    expected += [str(r) for r in sorted(made[3:], reverse=True)]
    client = store.test_client()

    seen, cursor = [], None
    for _ in range(5):
        url = "/deliveries/?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = get_json(client, url)
        seen += ids(page)
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == expected
    assert len(get_json(client, "/deliveries/?limit=5")["items"]) == 5
    assert get_json(client, "/deliveries/?limit=5")["next_cursor"] is None


@pytest.mark.parametrize(
    "query",
    [
        "status=DEAD",
        "status=failed",
        "status=",
        "limit=0",
        "limit=101",
        "limit=ten",
        "conversation_id=42",
        "conversation_id=%00",
        "cursor=%00",
        "cursor=" + "A" * 201,
    ],
)
def test_list_refuses_bad_parameters(store, query):
    error(store.test_client().get(f"/deliveries/?{query}"), 400)


@pytest.mark.parametrize(
    "raw",
    [
        "not a cursor",
        "2025-06-04T14:20:05+00:00|not-a-uuid",
        "2025-06-04T14:20:05-03:00|6a41b347-8d80-4ce9-84ba-7af66f369f6a",
        "2025-06-04T14:20:05+00:00|6A41B347-8D80-4CE9-84BA-7AF66F369F6A",
    ],
)
def test_list_refuses_a_forged_cursor(store, raw):
    cursor = base64.urlsafe_b64encode(raw.encode()).decode()
    error(store.test_client().get(f"/deliveries/?cursor={cursor}"), 400, "invalid_cursor")


# --- GET /deliveries/{reply_id}/ ---------------------------------------------------------


def test_one_delivery(store):
    conversation = make_conversation()
    reply = make_reply(conversation, PENDING, attempts=2, last_status=503, last_error="HTTP 503")
    client = store.test_client()

    body = get_json(client, f"/deliveries/{reply}/")
    assert set(body) == DELIVERY_KEYS
    assert (body["reply_id"], body["status"], body["attempts"]) == (str(reply), "pending", 2)
    assert (body["last_status"], body["last_error"]) == (503, "HTTP 503")
    assert get_json(client, f"/deliveries/{reply.hex.upper()}") == body


def test_unknown_or_malformed_delivery_is_404(store):
    client = store.test_client()
    reply_without_delivery = make_reply(make_conversation())
    for reply_id in (uuid.uuid4(), reply_without_delivery):
        error(client.get(f"/deliveries/{reply_id}/"), 404, "delivery_not_found")
        error(client.post(f"/deliveries/{reply_id}/retry"), 404, "delivery_not_found")
    error(client.get("/deliveries/not-an-id/"), 404, "not_found")
    error(client.post("/deliveries/not-an-id/retry"), 404, "not_found")


# --- retry over the API --------------------------------------------------------------


def test_retry_one_dead_delivery(store, fake_clock):
    conversation = make_conversation()
    created = now() - timedelta(hours=30)
    dead = make_reply(conversation, DEAD, at=created, attempts=40, last_error="gave up after 24 h")
    other = make_reply(conversation, DEAD)
    fake_clock.advance(1)
    client = store.test_client()

    response = client.post(f"/deliveries/{dead}/retry")

    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert set(body) == DELIVERY_KEYS
    assert body["status"] == "pending"
    assert body["next_attempt_at"] is not None
    row = stored(dead)
    assert (row.status, row.attempts, row.created_at) == (PENDING, 40, created)
    assert row.retry_from > created  # a new retry window
    assert stored(other).status == DEAD  # only the one asked for


@pytest.mark.parametrize("status", [PENDING, DELIVERED])
def test_retry_of_a_live_delivery_is_409(store, status):
    reply = make_reply(make_conversation(), status)
    before = stored(reply)

    body = error(store.test_client().post(f"/deliveries/{reply}/retry"), 409, "not_dead")

    assert status in body["message"]
    after = stored(reply)
    assert (after.status, after.attempts, after.next_attempt_at) == (
        before.status,
        before.attempts,
        before.next_attempt_at,
    )


def test_retry_all_dead(store):
    conversation = make_conversation()
    dead = [make_reply(conversation, DEAD) for _ in range(2)]
    delivered = make_reply(conversation, DELIVERED)
    client = store.test_client()

    response = client.post("/deliveries/retry", json={"all_dead": True})

    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"retried": 2}
    assert [stored(r).status for r in dead] == [PENDING, PENDING]
    assert stored(delivered).status == DELIVERED
    assert client.post("/deliveries/retry/", json={"all_dead": True}).get_json() == {"retried": 0}


@pytest.mark.parametrize(
    "body",
    [{}, {"all_dead": False}, {"all_dead": "true"}, {"all_dead": 1}, {"all_dead": None}, []],
)
def test_retry_all_refuses_anything_but_all_dead_true(store, body):
    dead = make_reply(make_conversation(), DEAD)

    error(store.test_client().post("/deliveries/retry", json=body), 400)

    assert stored(dead).status == DEAD


def test_retry_all_refuses_a_body_that_is_not_json(store):
    dead = make_reply(make_conversation(), DEAD)
    client = store.test_client()

    error(client.post("/deliveries/retry", data="all_dead=true"), 400)
    error(client.post("/deliveries/retry", data="{", content_type="application/json"), 400)

    assert stored(dead).status == DEAD


# --- the CLI -------------------------------------------------------------------------


def test_cli_list(store):
    first, second = make_conversation(), make_conversation()
    start = now()
    dead = make_reply(first, DEAD, at=start - timedelta(minutes=1))
    pending = make_reply(second, PENDING, at=start, attempts=2, last_error="HTTP 503")
    runner = store.test_cli_runner()

    result = runner.invoke(args=["deliveries", "list"])

    assert result.exit_code == 0, result.output
    header, *lines = result.output.splitlines()
    assert header.split()[:4] == ["REPLY", "ID", "CONVERSATION", "STATUS"]
    assert "LAST ERROR" in header
    assert [line.split()[:4] for line in lines] == [
        [str(pending), str(second), "pending", "2"],
        [str(dead), str(first), "dead", "1"],
    ]
    assert lines[0].endswith("HTTP 503")
    assert lines[1].endswith("HTTP 400: not retried")

    result = runner.invoke(args=["deliveries", "list", "--status", "dead"])
    assert [line.split()[0] for line in result.output.splitlines()[1:]] == [str(dead)]
    result = runner.invoke(args=["deliveries", "list", "--conversation", str(second)])
    assert [line.split()[0] for line in result.output.splitlines()[1:]] == [str(pending)]
    result = runner.invoke(args=["deliveries", "list", "--limit", "1"])
    assert len(result.output.splitlines()) == 2

    for bad in (["--status", "DEAD"], ["--conversation", "42"], ["--limit", "0"]):
        result = runner.invoke(args=["deliveries", "list", *bad])
        assert result.exit_code == 2, result.output


def test_cli_retry_by_id_and_all_dead(store):
    conversation = make_conversation()
    first, second, third = (make_reply(conversation, DEAD) for _ in range(3))
    delivered = make_reply(conversation, DELIVERED)
    runner = store.test_cli_runner()

    result = runner.invoke(args=["deliveries", "retry", str(first)])
    assert result.exit_code == 0, result.output
    assert result.output == "retried 1 dead delivery\n"
    assert [stored(r).status for r in (first, second, third)] == [PENDING, DEAD, DEAD]

    # An id that is not dead is left alone and makes the command fail, after the others.
    result = runner.invoke(args=["deliveries", "retry", str(second), str(delivered)])
    assert result.exit_code == 1, result.output
    assert "retried 1 dead delivery" in result.output
    assert f"not dead deliveries, left as they are: {delivered}" in result.output
    assert [stored(r).status for r in (second, delivered)] == [PENDING, DELIVERED]

    result = runner.invoke(args=["deliveries", "retry", "--all-dead"])
    assert result.exit_code == 0, result.output
    assert result.output == "retried 1 dead delivery\n"
    assert stored(third).status == PENDING


@pytest.mark.parametrize("args", [[], ["--all-dead", "6a41b347-8d80-4ce9-84ba-7af66f369f6a"]])
def test_cli_retry_needs_ids_or_all_dead(store, args):
    dead = make_reply(make_conversation(), DEAD)

    result = store.test_cli_runner().invoke(args=["deliveries", "retry", *args])

    assert result.exit_code == 2, result.output
    assert stored(dead).status == DEAD


# --- the read token ------------------------------------------------------------------


def test_deliveries_need_the_api_token(make_app):
    app = make_app(API_TOKENS=["s3cret"])
    with app.app_context():
        dead = make_reply(make_conversation(), DEAD)
        client = app.test_client()
        calls = [
            ("get", "/deliveries/", None),
            ("get", f"/deliveries/{dead}/", None),
            ("post", f"/deliveries/{dead}/retry", None),
            ("post", "/deliveries/retry", {"all_dead": True}),
        ]
        for method, url, body in calls:
            for headers in ({}, {"Authorization": "Bearer wrong"}):
                response = getattr(client, method)(url, json=body, headers=headers)
                error(response, 401, "unauthorized")
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert stored(dead).status == DEAD

        auth = {"Authorization": "Bearer s3cret"}
        assert get_json(client, "/deliveries/", headers=auth)["items"][0]["reply_id"] == str(dead)
        response = client.post(f"/deliveries/{dead}/retry", headers=auth)
        assert response.status_code == 200, response.get_json()


# --- each reply's delivery state in GET /conversations/{id}/ ----------------------------


def test_conversation_shows_no_delivery_when_it_is_off(store):
    conversation = make_conversation()
    make_reply(conversation)

    messages = get_json(store.test_client(), f"/conversations/{conversation}/")["messages"]

    # SPEC's shape exactly: delivery never configured changes nothing.
    assert [set(m) for m in messages] == [{"id", "type", "content", "timestamp"}] * 2


def test_conversation_shows_each_reply_delivery_when_on(make_app):
    app = make_app(REPLY_WEBHOOK_URL="http://127.0.0.1:9/replies")
    with app.app_context():
        conversation = make_conversation()
        start = now()
        before = make_reply(conversation, at=start - timedelta(minutes=1))
        dead = make_reply(conversation, DEAD, at=start)

        messages = get_json(app.test_client(), f"/conversations/{conversation}/")["messages"]

    inbound = [m for m in messages if m["type"] == "INBOUND"]
    replies = {m["id"]: m for m in messages if m["type"] == "OUTBOUND"}
    assert all("delivery" not in m for m in inbound)
    assert replies[str(before)]["delivery"] is None  # stored before delivery was on
    assert replies[str(dead)]["delivery"] == {
        "status": "dead",
        "attempts": 1,
        "next_attempt_at": None,
        "last_attempt_at": start.isoformat(),
        "last_status": 400,
        "last_error": "HTTP 400: not retried",
        "delivered_at": None,
    }
    assert set(replies[str(dead)]["delivery"]) == STATE_KEYS


def test_conversation_keeps_showing_deliveries_after_it_is_turned_off(store):
    conversation = make_conversation()
    dead = make_reply(conversation, DEAD)
    older = make_reply(conversation, at=now() - timedelta(minutes=1))

    messages = get_json(store.test_client(), f"/conversations/{conversation}/")["messages"]

    replies = {m["id"]: m for m in messages if m["type"] == "OUTBOUND"}
    assert replies[str(dead)]["delivery"]["status"] == "dead"
    assert "delivery" not in replies[str(older)]


# --- gauges ----------------------------------------------------------------------------


def metric(text, name):
    values = [line.split()[1] for line in text.splitlines() if line.startswith(f"{name} ")]
    assert len(values) == 1, text
    return float(values[0])


def test_outbox_gauges(store, fake_clock):
    client = store.test_client()
    body = client.get("/metrics").get_data(as_text=True)
    assert metric(body, "delivery_outbox_depth") == 0
    assert metric(body, "delivery_oldest_pending_age_seconds") == 0

    conversation = make_conversation()
    start = now()
    make_reply(conversation, PENDING, at=start - timedelta(seconds=90))
    make_reply(conversation, PENDING, at=start - timedelta(seconds=30))
    make_reply(conversation, DEAD, at=start - timedelta(hours=30))
    make_reply(conversation, DELIVERED, at=start - timedelta(hours=40))
    fake_clock.advance(10)

    body = client.get("/metrics").get_data(as_text=True)

    assert metric(body, "delivery_outbox_depth") == 2
    assert metric(body, "delivery_oldest_pending_age_seconds") == pytest.approx(100)
