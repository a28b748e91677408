"""Outbound HTTP: reply events POSTed to the team's receiver, signed per Standard Webhooks
(https://www.standardwebhooks.com/, with the `standardwebhooks` library), and closed groups
POSTed to the team's reply generator.

Safe to call from several threads at once: one `requests.Session` per process, whose
connection pool keeps a connection per sending thread.
"""

import functools
import json
import math
import threading
import time

import requests
import urllib3
from requests.adapters import HTTPAdapter
from standardwebhooks import Webhook

from service.domain.delivery import Answer

# Connections kept to the receiver: at least one per sending thread.
POOL_SIZE = 16
# A receiver's answer up to this long (by its Content-Length) is read whole, so its connection
# can be used again; a longer one, or one of unknown length, is dropped unread.
DRAIN_LIMIT_BYTES = 64 * 1024
_session = None
_session_lock = threading.Lock()


def session():
    """This process's HTTP session (created on first use)."""
    global _session
    with _session_lock:
        if _session is None:
            _session = requests.Session()
            # The environment (proxies, CA bundle) is read once per URL by `_environment`:
            # requests would read it again on every call, which cost more CPU than signing.
            _session.trust_env = False
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE, max_retries=0)
            _session.mount("http://", adapter)
            _session.mount("https://", adapter)
        return _session


@functools.cache
def _environment(url):
    """The proxies, CA bundle and client certificate the environment gives for `url`
    (HTTPS_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE, ...), as requests reads them, once."""
    reader = requests.Session()
    try:
        found = reader.merge_environment_settings(url, {}, None, None, None)
    finally:
        reader.close()
    return {"proxies": found["proxies"], "verify": found["verify"], "cert": found["cert"]}


@functools.cache
def _webhook(secret):
    return Webhook(secret)


def body_of(event):
    """The exact text to sign and send: compact JSON, UTF-8."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


def signed_headers(secrets, message_id, moment, body):
    """The Standard Webhooks headers for `body` (text) sent at `moment` (aware datetime):
    `webhook-id`, `webhook-timestamp` (unix seconds) and `webhook-signature`, one `v1,...`
    signature per secret (`whsec_...`), space-separated, so a receiver that knows any one of
    them verifies it (rotation)."""
    signatures = " ".join(_webhook(s).sign(str(message_id), moment, body) for s in secrets)
    return {
        "webhook-id": str(message_id),
        "webhook-timestamp": str(math.floor(moment.timestamp())),
        "webhook-signature": signatures,
        "Content-Type": "application/json",
    }


def post(url, body, headers, timeout):
    """POST `body` (text) and classify what came back, without raising: an Answer with the
    HTTP status and Retry-After header, or status None and an error ("timeout after 5 s",
    "connection refused", ...). `timeout` in seconds bounds the connect and each wait for
    the receiver (requests' connect and read timeouts); redirects are not followed (a 3xx is
    the answer), and the response body is only read to keep the connection (see
    DRAIN_LIMIT_BYTES)."""
    status, error, retry_after, _ = exchange(url, body, headers, timeout, read_limit=None)
    return Answer(status, error, retry_after)


def exchange(url, body, headers, timeout, read_limit):
    """POST `body` (text) like `post`, and read at most `read_limit` bytes of the answer's
    body when it is not None. Returns (status, error, retry_after, body): body is None when
    not read, when there was no answer, or when the answer was longer than `read_limit`."""
    try:
        response = session().post(
            url,
            data=body.encode(),
            headers=headers,
            timeout=(timeout, timeout),
            allow_redirects=False,
            stream=True,
            **_environment(url),
        )
    except requests.Timeout:
        return None, f"timeout after {timeout:g} s", None, None
    except requests.ConnectionError as exc:
        return None, connection_error(exc), None, None
    except requests.RequestException as exc:
        return None, f"request failed: {type(exc).__name__}", None, None
    content = None
    try:
        size = response.headers.get("Content-Length", "")
        # Only uncompressed: a small compressed body may inflate to any size.
        plain = response.headers.get("Content-Encoding", "identity").lower() == "identity"
        if read_limit is not None or (plain and size.isdigit() and int(size) <= DRAIN_LIMIT_BYTES):
            # Read whole, the connection goes back to the pool for the next call: a new
            # connection per call cost the sender and the receiver more CPU than the call.
            content = read_body(response, read_limit or DRAIN_LIMIT_BYTES, timeout)
            if read_limit is None:
                content = None
    except (requests.Timeout, urllib3.exceptions.TimeoutError, BodyTimeout):
        return None, f"timeout after {timeout:g} s", None, None
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        return None, f"answer cut off: {type(exc).__name__}", None, None
    finally:
        # A body not read whole (too large, too slow, or of unknown length when not needed)
        # is not drained: it must not hold the call. Closing drops that connection instead.
        response.close()
    return response.status_code, None, response.headers.get("Retry-After"), content


class BodyTimeout(Exception):
    """An answer's body took longer than its whole budget to arrive."""


def read_body(response, limit, timeout):
    """The answer's body, decoded, or None when longer than `limit` bytes. Raises BodyTimeout
    when it takes more than `timeout` seconds in all: the read timeout bounds each wait only,
    and a peer sending a byte at a time would hold the call for as long as it liked. Read to
    its end, the body gives its connection back to the pool (urllib3 does so at the end)."""
    ends = time.monotonic() + timeout
    chunks, size = [], 0
    while chunk := response.raw.read1(8192, decode_content=True):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if time.monotonic() > ends:
            raise BodyTimeout()
    return b"".join(chunks)


def connection_error(exc):
    """A short text for a failed connection: "connection refused", "connection reset", ..."""
    seen = set()
    cause = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, ConnectionResetError):
            return "connection reset"
        if "Name or service not known" in str(cause) or "NameResolutionError" in repr(cause):
            return "host not found"
        nested = cause.args[0] if cause.args and isinstance(cause.args[0], BaseException) else None
        cause = cause.__cause__ or cause.__context__ or nested or getattr(cause, "reason", None)
    return "connection failed"
