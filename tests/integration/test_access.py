"""Read access (../shared/SPEC.md, "Access"): bearer tokens on the reads, the live stream and
/metrics; the health checks, the webhook, the console shell and the API document stay open."""

import hmac
import json

import pytest

from service.api import access
from service.api.signatures import sign
from service.config import load_config
from tests.helpers import new_conversation, new_id, open_conversation

TOKENS = ["old-token", "new-token"]
METRICS_TOKEN = "scrape-token"
READS = [
    "/conversations/",
    "/conversations/?status=OPEN&limit=5",
    "/conversations/{id}/",
    "/conversations/{id}/activity",
    "/held/",
    "/held/?status=EXPIRED",
]
WRONG = [
    {},
    {"Authorization": "Bearer wrong-token"},
    {"Authorization": "Bearer "},
    {"Authorization": "Bearer old-token-and-more"},
    {"Authorization": "Basic b2xkLXRva2Vu"},
    {"Authorization": "old-token"},
]


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def guarded(make_app):
    """An app with two API tokens (a rotation in progress) and a metrics token."""
    app = make_app(API_TOKENS=TOKENS, METRICS_TOKENS=[METRICS_TOKEN])
    with app.app_context():
        yield app


@pytest.fixture
def conversation_id(guarded):
    """A conversation created through the (open) webhook."""
    return open_conversation(guarded.test_client())


def assert_unauthorized(response):
    assert response.status_code == 401, response.get_data(as_text=True)
    body = response.get_json()
    assert body["code"] == 401
    assert body["status"] == "Unauthorized"
    assert body["error"] == "unauthorized"
    assert "Authorization: Bearer" in body["message"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("path", READS)
@pytest.mark.parametrize("headers", WRONG, ids=lambda h: h.get("Authorization", "none"))
def test_reads_refuse_a_missing_or_wrong_token(guarded, conversation_id, path, headers):
    response = guarded.test_client().get(path.format(id=conversation_id), headers=headers)
    assert_unauthorized(response)


@pytest.mark.parametrize("path", READS)
@pytest.mark.parametrize("token", TOKENS)
def test_reads_answer_each_rotated_token(guarded, conversation_id, path, token):
    response = guarded.test_client().get(path.format(id=conversation_id), headers=bearer(token))
    assert response.status_code == 200, response.get_json()


def test_the_scheme_is_case_insensitive_and_the_token_trimmed(guarded, conversation_id):
    response = guarded.test_client().get(
        f"/conversations/{conversation_id}/", headers={"Authorization": "bearer   new-token  "}
    )
    assert response.status_code == 200
    assert response.get_json()["id"] == conversation_id


def test_a_refused_token_is_told_invalid_token(guarded):
    response = guarded.test_client().get("/held/", headers=bearer("wrong"))
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert guarded.test_client().get("/held/").headers["WWW-Authenticate"] == "Bearer"


def test_the_token_is_checked_before_anything_else(make_app):
    # A refused read learns nothing, not even whether the database is up or the id exists.
    app = make_app(
        API_TOKENS=TOKENS,
        SQLALCHEMY_DATABASE_URI="postgresql+psycopg2://postgres@127.0.0.1:1/test",
    )
    with app.app_context():
        client = app.test_client()
        assert_unauthorized(client.get(f"/conversations/{new_id()}/"))
        assert_unauthorized(client.get("/conversations/?limit=0"))
        assert_unauthorized(client.get("/held/?status=NOPE"))
        assert client.get("/held/", headers=bearer("new-token")).status_code == 503


def test_every_token_is_compared_whichever_matches(guarded, monkeypatch):
    compared = []
    compare = hmac.compare_digest

    def counting(a, b):
        compared.append(b)
        return compare(a, b)

    monkeypatch.setattr(access.hmac, "compare_digest", counting)
    client = guarded.test_client()
    for headers in (bearer("old-token"), bearer("new-token"), bearer("nope"), {}):
        compared.clear()
        client.get("/held/", headers=headers)
        assert compared == [t.encode() for t in TOKENS]


def test_live_stream_needs_the_token(guarded):
    client = guarded.test_client()
    for headers in WRONG:
        assert_unauthorized(client.get("/events/stream", headers=headers))
    response = client.get("/events/stream", headers=bearer("old-token"), buffered=False)
    try:
        assert response.status_code == 200
        assert response.mimetype == "text/event-stream"
        first = next(iter(response.response))
        assert "connected" in (first.decode() if isinstance(first, bytes) else first)
    finally:
        response.close()


def test_a_refused_stream_takes_no_slot(make_app):
    app = make_app(API_TOKENS=TOKENS, STREAM_SLOTS=1)
    with app.app_context():
        client = app.test_client()
        for _ in range(3):
            assert_unauthorized(client.get("/events/stream"))
        response = client.get("/events/stream", headers=bearer("new-token"), buffered=False)
        assert response.status_code == 200
        response.close()


@pytest.mark.parametrize("path", ["/healthz", "/openapi.json", "/docs", "/"])
def test_health_and_docs_stay_open(guarded, path):
    assert guarded.test_client().get(path).status_code in (200, 302)


def test_readyz_stays_open(guarded):
    # Ready or not (no worker runs here), it answers without a token.
    assert guarded.test_client().get("/readyz").status_code in (200, 503)


def test_console_shell_stays_open(make_app, tmp_path):
    (tmp_path / "index.html").write_text("<!doctype html><title>console</title>")
    (tmp_path / "app.js").write_text("console.log('shell')")
    app = make_app(API_TOKENS=TOKENS, CONSOLE_DIST=str(tmp_path))
    client = app.test_client()
    for path in ("/ui/", "/ui/app.js", "/ui/conversations/anything"):
        with client.get(path) as response:
            assert response.status_code == 200, path


def test_metrics_take_their_own_token(guarded):
    client = guarded.test_client()
    for headers in [*WRONG, bearer("old-token")]:
        assert_unauthorized(client.get("/metrics", headers=headers))
    response = client.get("/metrics", headers=bearer(METRICS_TOKEN))
    assert response.status_code == 200
    assert "webhook_events_total" in response.get_data(as_text=True)


def test_metrics_token_works_without_api_token(make_app):
    app = make_app(METRICS_TOKENS=[METRICS_TOKEN])
    with app.app_context():
        client = app.test_client()
        assert_unauthorized(client.get("/metrics"))
        assert client.get("/metrics", headers=bearer(METRICS_TOKEN)).status_code == 200
        assert client.get("/held/").status_code == 200


def test_webhook_needs_no_token(guarded):
    client = guarded.test_client()
    response = client.post("/webhook/", json=new_conversation(new_id()))
    assert response.status_code == 201, response.get_json()
    assert "WWW-Authenticate" not in response.headers


def test_webhook_keeps_its_signature_error(make_app):
    app = make_app(API_TOKENS=TOKENS, WEBHOOK_SECRETS=["secret"])
    client = app.test_client()
    raw = json.dumps(new_conversation(new_id())).encode()
    headers = {"Content-Type": "application/json", **bearer("new-token")}
    response = client.post("/webhook/", data=raw, headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_signature"
    signed = {"Content-Type": "application/json", "X-Hub-Signature-256": sign("secret", raw)}
    assert client.post("/webhook/", data=raw, headers=signed).status_code == 201


def test_without_tokens_nothing_changes(client):
    conversation_id = open_conversation(client)
    for path in [*READS, "/metrics"]:
        response = client.get(path.format(id=conversation_id))
        assert response.status_code == 200, (path, response.get_json())
    response = client.get("/events/stream", buffered=False)
    assert response.status_code == 200
    response.close()


def test_openapi_documents_the_bearer_scheme(guarded):
    spec = guarded.test_client().get("/openapi.json").get_json()
    assert spec["components"]["securitySchemes"][access.SCHEME] == {
        "type": "http",
        "scheme": "bearer",
        "description": spec["components"]["securitySchemes"][access.SCHEME]["description"],
    }
    for path, item in spec["paths"].items():
        operations = {m: o for m, o in item.items() if m != "parameters"}
        for method, operation in operations.items():
            if path.startswith(("/conversations", "/held", "/deliveries", "/generations")):
                assert operation["security"] == [{access.SCHEME: []}], (path, method)
                assert operation["responses"]["401"] == {
                    "$ref": "#/components/responses/UNAUTHORIZED"
                }
            else:
                assert "security" not in operation, (path, method)
    assert "UNAUTHORIZED" in spec["components"]["responses"]


@pytest.mark.parametrize(
    "raw, tokens",
    [
        ("", []),
        ("one", ["one"]),
        (" one , two ", ["one", "two"]),
        ("one,,two,", ["one", "two"]),
        (" , ", []),
    ],
)
def test_token_settings_are_comma_separated(tmp_path, raw, tokens):
    config = load_config(tmp_path, {"API_TOKEN": raw, "METRICS_TOKEN": raw})
    assert config["API_TOKENS"] == tokens
    assert config["METRICS_TOKENS"] == tokens
    assert load_config(tmp_path, {})["API_TOKENS"] == []
