"""The webhook's body (issue 12, items 2, 3 and 5; ../shared/SPEC.md, "Events in"): the size
limit whatever the framing, Content-Encoding decoded under the same limit, deep JSON.

Chunked framing only exists on a real server, so those tests go through gunicorn.
"""

import gzip
import json
import socket
import time
import uuid
import zlib

import pytest
import requests

from service.api.body import MAX_JSON_DEPTH
from service.api.signatures import sign
from service.extensions import db
from service.infra.models import Conversation
from tests.conftest import TEST_DATABASE_URL, TEST_REDIS_URL
from tests.helpers import new_conversation, new_id, new_message, open_conversation
from tests.stack import running_web, stack_env

LIMIT = 1024 * 1024  # MAX_BODY_BYTES's default, which the gunicorn below runs with
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def web(_schema, tmp_path_factory):
    """The base URL of a real gunicorn serving the app on the test database and Redis."""
    env = stack_env(TEST_DATABASE_URL, TEST_REDIS_URL, strip=("MAX_BODY_BYTES", "WEBHOOK_SECRET"))
    with running_web(env | {"WEB_CONCURRENCY": "1"}, logs=tmp_path_factory.mktemp("web")) as stack:
        yield stack.base_url


def stored(conversation_id):
    """Whether the conversation is in the database (as committed by any process)."""
    db.session.rollback()
    return db.session.get(Conversation, uuid.UUID(conversation_id)) is not None


def event_bytes(conversation_id):
    return json.dumps(new_conversation(conversation_id)).encode()


def in_chunks(head, padding):
    """A body of `head` then `padding` spaces (valid JSON), as a generator: requests sends it
    with Transfer-Encoding: chunked and no Content-Length."""
    yield head
    for start in range(0, padding, 64 * 1024):
        yield b" " * min(64 * 1024, padding - start)


def post_chunked(web, head, padding, headers=JSON):
    response = requests.post(
        f"{web}/webhook/", data=in_chunks(head, padding), headers=headers, timeout=30
    )
    assert response.request.headers["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in response.request.headers
    return response


# --- framing (real gunicorn) -------------------------------------------------------------


@pytest.mark.parametrize("size", [2 * 1024 * 1024, int(1.1 * 1024 * 1024), LIMIT + 1])
def test_chunked_body_over_the_limit_is_413_and_stores_nothing(app, web, size):
    conversation_id = new_id()
    head = event_bytes(conversation_id)
    response = post_chunked(web, head, size - len(head))
    assert response.status_code == 413, response.text
    assert response.json()["error"] == "payload_too_large"
    assert not stored(conversation_id)


@pytest.mark.parametrize("size", [10 * 1024, LIMIT])
def test_chunked_body_within_the_limit_is_accepted(app, web, size):
    conversation_id = new_id()
    head = event_bytes(conversation_id)
    response = post_chunked(web, head, size - len(head))
    assert response.status_code == 201, response.text
    assert stored(conversation_id)


def test_chunked_gzip_body_is_decoded(app, web):
    conversation_id = new_id()
    body = gzip.compress(event_bytes(conversation_id))
    response = post_chunked(web, body, 0, headers={**JSON, "Content-Encoding": "gzip"})
    assert response.status_code == 201, response.text
    assert stored(conversation_id)


def send_raw(web, request_bytes):
    """Send bytes as they are to the server of `web`, then close the sending side; return
    (status, JSON body)."""
    host, port = web.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request_bytes)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


@pytest.mark.parametrize(
    "chunks",
    [
        b"zz\r\nab\r\n0\r\n\r\n",  # a size that is not hex
        b"2\r\nabX0\r\n\r\n",  # no CRLF after the chunk's data
        b"-5\r\nabcde\r\n0\r\n\r\n",
        b"2\r\n{}\r\n0\r\nno-colon-trailer\r\n\r\n",
    ],
    ids=["size-not-hex", "missing-crlf", "negative-size", "bad-trailer"],
)
def test_malformed_chunked_framing_is_400(web, chunks):
    """gunicorn raises its own parse errors while the app reads the body: they are the
    sender's framing, so 400 in the error shape, never 500."""
    head = (
        b"POST /webhook/ HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    status, body = send_raw(web, head + chunks)
    assert status == 400
    assert body["error"] == "invalid_framing"


def test_body_shorter_than_its_content_length_is_400(app, web):
    conversation_id = new_id()
    body = event_bytes(conversation_id)
    head = (
        b"POST /webhook/ HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (len(body) + 100)
    )
    status, answer = send_raw(web, head + body)
    assert status == 400
    assert answer["error"] == "incomplete_body"
    assert not stored(conversation_id)


# --- encodings (Flask test client) ---------------------------------------------------------


def raw_deflate(data):
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


ENCODERS = {
    "gzip": gzip.compress,
    "x-gzip": gzip.compress,
    "GZIP": gzip.compress,
    "deflate": zlib.compress,
    "deflate (raw)": raw_deflate,
    "identity": lambda data: data,
    "identity, gzip": gzip.compress,
}


@pytest.mark.parametrize("name", ENCODERS)
def test_encoded_body_is_decoded_and_stored(client, name):
    conversation_id = new_id()
    body = ENCODERS[name](event_bytes(conversation_id))
    coding = name.removesuffix(" (raw)")
    response = client.post("/webhook/", data=body, headers={**JSON, "Content-Encoding": coding})
    assert response.status_code == 201, response.get_json()
    assert stored(conversation_id)


def test_gzip_members_decode_as_one_body(client):
    conversation_id = new_id()
    body = event_bytes(conversation_id)
    members = gzip.compress(body[:10]) + gzip.compress(body[10:])
    response = client.post("/webhook/", data=members, headers={**JSON, "Content-Encoding": "gzip"})
    assert response.status_code == 201, response.get_json()


def test_too_many_gzip_members_is_400_at_once(client):
    """Each member costs a decompressor; a body of empty members is refused, not walked."""
    members = gzip.compress(b"", mtime=0) * 50_000
    started = time.perf_counter()
    response = client.post("/webhook/", data=members, headers={**JSON, "Content-Encoding": "gzip"})
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_encoding"
    assert time.perf_counter() - started < 0.5


def test_gzip_bomb_is_413_without_being_inflated_whole(client, monkeypatch):
    conversation_id = new_id()
    # A valid event once inflated: 10 MiB of spaces after it, about 10 KB gzipped.
    bomb = gzip.compress(event_bytes(conversation_id) + b" " * (10 * 1024 * 1024))
    assert len(bomb) < 20_000
    inflated = []
    real = zlib.decompressobj

    class Spy:
        def __init__(self, *args):
            self.inflater = real(*args)

        def __getattr__(self, name):
            return getattr(self.inflater, name)

        def decompress(self, data, max_length=0):
            out = self.inflater.decompress(data, max_length)
            inflated.append(len(out))
            return out

    monkeypatch.setattr(zlib, "decompressobj", Spy)
    started = time.monotonic()
    response = client.post("/webhook/", data=bomb, headers={**JSON, "Content-Encoding": "gzip"})
    assert time.monotonic() - started < 1
    assert response.status_code == 413
    assert response.get_json()["error"] == "payload_too_large"
    assert sum(inflated) <= LIMIT + 1
    assert not stored(conversation_id)


def test_limit_applies_to_decoded_bytes(make_app):
    app = make_app(MAX_CONTENT_LENGTH=1000)
    with app.app_context():
        event = new_conversation(new_id())
        at_limit = json.dumps(event).encode().ljust(1000)
        headers = {**JSON, "Content-Encoding": "gzip"}
        client = app.test_client()
        over = client.post("/webhook/", data=gzip.compress(at_limit + b" "), headers=headers)
        assert over.status_code == 413
        at = client.post("/webhook/", data=gzip.compress(at_limit), headers=headers)
        assert at.status_code == 201, at.get_json()
        assert stored(event["data"]["id"])


@pytest.mark.parametrize("coding", ["br", "zstd", "compress", "gzip, gzip", "deflate, gzip"])
def test_unsupported_encoding_is_415(client, coding):
    conversation_id = new_id()
    body = event_bytes(conversation_id)
    response = client.post("/webhook/", data=body, headers={**JSON, "Content-Encoding": coding})
    assert response.status_code == 415
    error = response.get_json()
    assert error["error"] == "unsupported_encoding"
    assert "gzip" in error["message"] and "deflate" in error["message"]
    assert not stored(conversation_id)


CORRUPT = {
    "not gzip": ("gzip", b'{"type": "NEW_CONVERSATION"}'),
    "truncated": ("gzip", gzip.compress(b'{"type": "NEW_CONVERSATION"}')[:-6]),
    "trailing bytes": ("gzip", gzip.compress(b"{}") + b"garbage"),
    "bad deflate": ("deflate", b"\x78\x9c" + b"\xff" * 20),
    "empty": ("gzip", b""),
}


@pytest.mark.parametrize("case", CORRUPT)
def test_corrupt_compressed_body_is_400(client, case):
    coding, body = CORRUPT[case]
    response = client.post("/webhook/", data=body, headers={**JSON, "Content-Encoding": coding})
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_encoding"


@pytest.mark.parametrize("signed", ["decoded", "wire"])
def test_signature_may_cover_the_decoded_or_the_sent_bytes(make_app, signed):
    app = make_app(WEBHOOK_SECRETS=["secret"])
    with app.app_context():
        conversation_id = new_id()
        decoded = event_bytes(conversation_id)
        wire = gzip.compress(decoded)
        headers = {**JSON, "Content-Encoding": "gzip"}
        headers["X-Hub-Signature-256"] = sign("secret", decoded if signed == "decoded" else wire)
        response = app.test_client().post("/webhook/", data=wire, headers=headers)
        assert response.status_code == 201, response.get_json()
        assert stored(conversation_id)


def test_wrong_signature_of_an_encoded_body_is_401(make_app):
    app = make_app(WEBHOOK_SECRETS=["secret"])
    with app.app_context():
        conversation_id = new_id()
        decoded = event_bytes(conversation_id)
        headers = {**JSON, "Content-Encoding": "gzip", "X-Hub-Signature-256": sign("x", decoded)}
        response = app.test_client().post("/webhook/", data=gzip.compress(decoded), headers=headers)
        assert response.status_code == 401
        assert not stored(conversation_id)


# --- deep JSON -------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 1_000, 100_000])
def test_deeply_nested_json_is_400_json_too_deep(client, depth):
    response = client.post("/webhook/", data="[" * depth + "]" * depth, headers=JSON)
    assert response.status_code == 400
    error = response.get_json()
    assert error["error"] == "json_too_deep"
    assert str(MAX_JSON_DEPTH) in error["message"]


def test_nesting_up_to_the_limit_is_accepted(client):
    event = new_conversation(new_id())
    # The event and its data are two levels; unknown fields are ignored.
    event["data"]["extra"] = json.loads("[" * (MAX_JSON_DEPTH - 2) + "]" * (MAX_JSON_DEPTH - 2))
    response = client.post("/webhook/", json=event)
    assert response.status_code == 201, response.get_json()


def test_brackets_inside_strings_do_not_count(client):
    conversation_id = open_conversation(client)
    content = '[{"quoted\\" [[[' + "[{" * 100 + "\\\\"
    response = client.post("/webhook/", json=new_message(new_id(), conversation_id, content))
    assert response.status_code == 202, response.get_json()


def test_invalid_json_stays_invalid_json(client):
    response = client.post("/webhook/", data=b'{"type": [[[', headers=JSON)
    assert response.get_json()["error"] == "invalid_json"
