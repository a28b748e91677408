"""The edge, with real processes: nginx rendered from deploy/nginx/conversations.conf.template
(the file docker-compose.yml mounts) in front of gunicorn started from gunicorn.conf.py.

- Slow senders: stalled request bodies are held by nginx, never by a gunicorn thread, so
  normal webhooks are still answered (issue 12, item 1). Sent straight to gunicorn, the same
  32 stalled bodies take all 16 threads and normal requests time out.
- Errors produced before the app, by gunicorn (service/web_worker.py) or by nginx, are JSON of
  the service's error shape (item 5).
"""

import json
import os
import select
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import redis
import requests

from service import create_app
from tests.conftest import TEST_DATABASE_URL, TEST_REDIS_URL, app_config, empty_tables
from tests.proxy import NGINX, TEMPLATE, VARIABLES, Proxy, render
from tests.stack import free_port, running_web, stack_env

CLIENT_TIMEOUT = 2  # seconds: PROXY_CLIENT_TIMEOUT of the proxy under test
STALLED = 32
BODY_LIMIT = 1024 * 1024  # MAX_BODY_BYTES, the app's default

if not Path(NGINX).exists():
    if os.environ.get("CI"):
        raise RuntimeError(f"nginx is needed by {__name__} and is not at {NGINX}")
    pytest.skip(f"nginx is not installed ({NGINX}); apt-get install nginx", allow_module_level=True)


@pytest.fixture(scope="module")
def web(_schema):
    """gunicorn as `make run` and the image start it, on the test database and Redis."""
    try:
        with running_web(stack_env(TEST_DATABASE_URL, TEST_REDIS_URL)) as stack:
            yield stack
    finally:
        empty_tables(create_app(app_config()))
        redis.Redis.from_url(TEST_REDIS_URL).flushdb()


@pytest.fixture(scope="module")
def proxy(web):
    """nginx in front of `web`, with a short client timeout."""
    upstream = f"127.0.0.1:{web.env['PORT']}"
    proxy = Proxy(free_port(), upstream, PROXY_CLIENT_TIMEOUT=f"{CLIENT_TIMEOUT}s")
    try:
        yield proxy.start()
    finally:
        proxy.stop()


def port_of(url):
    return int(url.rsplit(":", 1)[1])


def exchange(port, data, timeout=5.0):
    """Send raw bytes, read one response: (status, headers, body). The response is complete at
    its Content-Length (nginx may linger before closing after a refused body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before the whole request was sent: the answer is still there
        received = b""
        while True:
            head, _, body = received.partition(b"\r\n\r\n")
            if _:
                lines = head.decode("latin-1").split("\r\n")
                headers = dict(line.split(": ", 1) for line in lines[1:])
                length = int(headers.get("Content-Length", -1))
                if 0 <= length <= len(body):
                    return int(lines[0].split()[1]), headers, body[:length]
            chunk = sock.recv(65536)
            if not chunk:
                raise AssertionError(f"connection closed before a whole response: {received!r}")
            received += chunk


def assert_json_error(response, status, error=None):
    code, headers, body = response
    assert code == status, (code, body)
    assert headers["Content-Type"].startswith("application/json"), headers
    payload = json.loads(body)
    assert payload["code"] == status and payload["status"] and payload["message"], payload
    if error:
        assert payload["error"] == error, payload
    return payload


def request(target="/healthz", method="GET", headers=b"", body=b""):
    return (
        f"{method} {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n".encode()
        + headers
        + b"\r\n"
        + body
    )


LONG_LINE = request("/" + "a" * 5 * 1024)  # over gunicorn's 4094-byte request line
LONGER_LINE = request("/" + "a" * 9 * 1024)  # over nginx's 8 KB too
BIG_HEADER = request(headers=b"X-Padding: " + b"a" * 9 * 1024 + b"\r\n")  # over 8190 / 8 KB


def new_conversation():
    return {
        "type": "NEW_CONVERSATION",
        "timestamp": "2025-06-04T14:20:00Z",
        "data": {"id": str(uuid.uuid4())},
    }


def test_stalled_bodies_do_not_take_the_service(proxy):
    port = port_of(proxy.base_url)
    stalled = []
    try:
        for _ in range(STALLED):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            stalled.append(sock)
            sock.sendall(
                b"POST /webhook/ HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                b'Content-Length: 2000\r\n\r\n{"type":'
            )
        opened = time.monotonic()
        for _ in range(5):
            started = time.monotonic()
            response = requests.post(
                proxy.base_url + "/webhook/", json=new_conversation(), timeout=10
            )
            assert response.status_code == 201, response.text
            assert time.monotonic() - started < 3
        # The normal webhooks were answered while every stalled body was still held open.
        assert time.monotonic() - opened < CLIENT_TIMEOUT
        assert select.select(stalled, [], [], 0)[0] == []
        # After the client timeout each stalled sender is disconnected (nginx logs 408 and
        # sends nothing): its socket reads EOF (or a reset), within a bound.
        deadline = opened + CLIENT_TIMEOUT + 5
        for sock in stalled:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                assert sock.recv(65536) == b""
            except ConnectionResetError:
                pass
    finally:
        for sock in stalled:
            sock.close()


@pytest.mark.parametrize(
    "data, status, error",
    [
        (LONG_LINE, 414, "uri_too_long"),
        (BIG_HEADER, 431, "headers_too_large"),
        (request(headers=b"".join(b"X-H%d: a\r\n" % i for i in range(120))), 431, None),
        (b"GARBAGE\r\n\r\n", 400, "bad_request"),
    ],
    ids=["request-line-5KB", "header-9KB", "120-headers", "garbage"],
)
def test_gunicorn_answers_its_own_errors_in_json(web, data, status, error):
    assert_json_error(exchange(port_of(web.base_url), data), status, error)


@pytest.mark.parametrize(
    "data, status, error",
    [
        (LONG_LINE, 414, "uri_too_long"),  # passed to gunicorn, whose JSON comes back
        (LONGER_LINE, 414, "uri_too_long"),
        (BIG_HEADER, 431, "headers_too_large"),
        (b"GARBAGE\r\n\r\n", 400, "bad_request"),
        (request(headers=b"Transfer-Encoding: gzip\r\n"), 501, "not_implemented"),
        (request(method="TRACE"), 405, "method_not_allowed"),
        (request("/_proxy/502"), 404, "not_found"),
    ],
    ids=["line-5KB", "line-9KB", "header-9KB", "garbage", "encoding", "trace", "internal"],
)
def test_proxy_answers_its_own_errors_in_json(proxy, data, status, error):
    assert_json_error(exchange(port_of(proxy.base_url), data), status, error)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_proxy_refuses_a_body_over_the_limit_in_json(proxy, framing):
    body = b'{"type": "NEW_CONVERSATION"' + b" " * BODY_LIMIT + b"}"
    if framing == "chunked":
        half = len(body) // 2
        chunks = [body[:half], body[half:]]
        framed = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
        headers = b"Transfer-Encoding: chunked\r\n"
    else:
        framed = body
        headers = b"Content-Length: %d\r\n" % len(body)
    data = request("/webhook/", "POST", b"Content-Type: application/json\r\n" + headers, framed)
    response = exchange(port_of(proxy.base_url), data)
    assert_json_error(response, 413, "payload_too_large")
    assert response[1]["X-Request-ID"]


def test_request_ids_and_app_errors_pass_through(proxy):
    given = requests.get(proxy.base_url + "/healthz", headers={"X-Request-ID": "edge-1"}, timeout=5)
    assert given.headers["X-Request-ID"] == "edge-1"
    made = requests.get(proxy.base_url + "/healthz", timeout=5)
    assert len(made.headers["X-Request-ID"]) == 32  # nginx's $request_id, passed to the app
    # The app's own errors are not replaced by the proxy's.
    missing = requests.get(proxy.base_url + "/no/such/path", timeout=5)
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found" and "proxy" not in missing.json()["message"]


def test_upstream_down_is_json():
    proxy = Proxy(free_port(), f"127.0.0.1:{free_port()}").start()
    try:
        response = requests.post(proxy.base_url + "/webhook/", json=new_conversation(), timeout=5)
    finally:
        proxy.stop()
    assert response.status_code == 502
    assert response.headers["Retry-After"]
    assert response.json()["error"] == "service_unavailable"


@pytest.mark.skipif(not shutil.which("envsubst"), reason="envsubst (gettext-base) is not installed")
def test_the_template_renders_as_in_the_nginx_image():
    """The tests render the template in Python; the nginx image runs envsubst on the names it
    is given (NGINX_ENVSUBST_FILTER in docker-compose.yml): both give the same file."""
    variables = dict(zip(VARIABLES, ("8000", "web:8000", "5s", "1048576"), strict=True))
    rendered = subprocess.run(
        ["envsubst", " ".join(f"${{{name}}}" for name in VARIABLES)],
        input=TEMPLATE.read_text(),
        env={**os.environ, **variables},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert rendered == render(TEMPLATE.read_text(), variables)
    assert "${" not in rendered
