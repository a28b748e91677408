"""HTTP client for the service: keep-alive connections, one per thread in a pool, webhook
signing, 503 retries and tolerant response decoding.

Never raises for HTTP or transport failures: a :class:`Response` with ``status`` 0 stands for
a request that got no HTTP answer.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .events import Json

SIGNATURE_HEADER = "X-Hub-Signature-256"
MAX_RETRY_AFTER = 10.0  # seconds: caps the server's Retry-After so one answer cannot stall a run


def encode_event(event: Json) -> bytes:
    """Compact UTF-8 JSON, the exact bytes that are posted and signed."""
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def sign(secret: str, body: bytes) -> str:
    """Value of the ``X-Hub-Signature-256`` header for ``body``: ``sha256=<hex HMAC-SHA256>``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


@dataclass
class Response:
    """One HTTP answer; ``body`` is decoded JSON, else the text, else ``None`` when empty."""

    status: int  # 0 means the request failed at the transport level
    body: Json
    elapsed: float  # seconds, including retries
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """A 2xx status."""
        return 200 <= self.status < 300

    @property
    def error_code(self) -> str | None:
        """The ``"error"`` field of a JSON object body, e.g. ``"message_expired"``."""
        return self.body.get("error") if isinstance(self.body, dict) else None


def _decode_body(raw: bytes) -> Json:
    text = raw.decode("utf-8", errors="replace")
    try:
        return json.loads(text) if text else None
    except ValueError:
        return text


_STALE_CONNECTION_ERRORS = (
    http.client.RemoteDisconnected,
    http.client.BadStatusLine,
    ConnectionResetError,
    BrokenPipeError,
)


class Client:
    """One persistent (keep-alive) HTTP connection to the service; not thread-safe.

    Signs webhook bodies when a secret is given, and sends ``Authorization: Bearer <token>`` with
    reads when a token is given (the service's ``API_TOKEN``). Transport failures become
    ``Response(0, ...)``.
    """

    def __init__(
        self,
        base_url: str,
        secret: str | None = None,
        timeout: float = 10.0,
        retries_503: int = 0,
        token: str | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"unsupported base URL: {base_url!r}")
        self.base_url = base_url
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self.secret = secret or None
        self.timeout = timeout
        self.retries_503 = retries_503
        self.token = token or None
        self._conn: http.client.HTTPConnection | None = None

    def post_event(self, event: Json) -> Response:
        """``POST /webhook/`` with ``event`` as JSON, signed when the client has a secret."""
        body = encode_event(event)
        headers = {"Content-Type": "application/json"}
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(self.secret, body)
        return self.request("POST", "/webhook/", body, headers)

    def get_conversation(self, conversation_id: str) -> Response:
        """``GET /conversations/{id}/``: 200 with the conversation and its messages, or 404."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        return self.request("GET", f"/conversations/{conversation_id}/", headers=headers)

    def get_generations(self, conversation_id: str) -> Response:
        """``GET /generations/?conversation_id=...``: the groups a conversation closed for the
        reply generator, each with its ``reply_id`` and ``message_ids`` (empty without one)."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        path = f"/generations/?conversation_id={conversation_id}&limit=100"
        return self.request("GET", path, headers=headers)

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None
    ) -> Response:
        """Send one request to ``path`` (below the base URL's path).

        A 503 is retried up to ``retries_503`` times, each after its ``Retry-After`` (capped at
        ``MAX_RETRY_AFTER`` s); ``elapsed`` of the result covers every attempt and wait, in s.
        """
        started = time.monotonic()
        attempt = 0
        while True:
            response = self._request_once(method, self._prefix + path, body, headers or {})
            if response.status != 503 or attempt >= self.retries_503:
                response.elapsed = time.monotonic() - started
                return response
            attempt += 1
            time.sleep(_retry_after(response.headers))

    def close(self) -> None:
        """Drop the connection; the next request opens a new one."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connect(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = (
                http.client.HTTPSConnection
                if self._scheme == "https"
                else http.client.HTTPConnection
            )
            self._conn = cls(self._host, self._port, timeout=self.timeout)
        return self._conn

    def _request_once(self, method: str, url: str, body: bytes | None, headers: dict) -> Response:
        for attempt in range(2):
            reused = self._conn is not None
            conn = self._connect()
            try:
                conn.request(method, url, body=body, headers=headers)
                raw = conn.getresponse()
                payload = raw.read()
            except _STALE_CONNECTION_ERRORS as exc:
                self.close()
                if reused and attempt == 0:  # the server closed an idle keep-alive connection
                    continue
                return _transport_error(exc)
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                return _transport_error(exc)
            if raw.will_close:
                self.close()
            return Response(raw.status, _decode_body(payload), 0.0, dict(raw.getheaders()))
        raise AssertionError("unreachable")


def _transport_error(exc: Exception) -> Response:
    return Response(0, {"error": "transport_error", "message": f"{type(exc).__name__}: {exc}"}, 0.0)


def _retry_after(headers: dict[str, str]) -> float:
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), "1")
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER)
    except ValueError:
        return 1.0


class ClientPool:
    """One :class:`Client` per thread, so each worker keeps its own persistent connection."""

    def __init__(self, factory: Callable[[], Client]) -> None:
        self._factory = factory
        self._local = threading.local()
        self._lock = threading.Lock()
        self._clients: list[Client] = []

    def get(self) -> Client:
        """The calling thread's client, created by the factory on first use."""
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._factory()
            with self._lock:
                self._clients.append(client)
        return client

    def close(self) -> None:
        """Close every client the pool created, whichever thread created it."""
        with self._lock:
            for client in self._clients:
                client.close()
            self._clients.clear()
