"""gunicorn's threaded worker, answering the errors gunicorn raises itself in JSON.

A request gunicorn cannot parse (a request line over `limit_request_line`, a header over
`limit_request_field_size`, too many headers, a malformed line or chunk) never reaches the
app: gunicorn answers it with a small HTML page. Every error the service answers has one JSON
shape (../shared/SPEC.md; service.api.errors.error_body), so this worker keeps gunicorn's
choice of status and its logging and renders only the body differently:

    HTTP/1.1 414 URI Too Long
    Content-Type: application/json

    {"code": 414, "status": "Request URI Too Long", "error": "uri_too_long",
     "message": "The request line is too long: Request Line is too large (5000 > 4094)."}

Used by gunicorn.conf.py (`worker_class`). Deliberately light: the gunicorn master imports
it before the app is loaded, so it uses neither the app nor flask-smorest.
"""

import json

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker

from werkzeug.http import HTTP_STATUS_CODES

# The same machine-readable codes as the app's (service.api.errors.DEFAULT_ERROR_CODES) and as
# the proxy's error pages (deploy/nginx/conversations.conf.template), with a human message.
ERRORS = {
    400: ("bad_request", "The request could not be parsed"),
    403: ("forbidden", "The request is forbidden"),
    408: ("request_timeout", "The request was not received in time"),
    413: ("payload_too_large", "The request body is too large"),
    414: ("uri_too_long", "The request line is too long"),
    417: ("expectation_failed", "The Expect header cannot be met"),
    431: ("headers_too_large", "The request headers are too large or too many"),
    500: ("internal_error", "The server failed to handle the request"),
    501: ("not_implemented", "The request uses a feature the server does not implement"),
}


def json_error(code, message):
    """The bytes of a complete HTTP/1.1 error response for status `code` (int): status line,
    headers and a JSON body `{"code", "status", "error", "message"}`. The connection is closed
    after it (gunicorn does not read past a request it cannot parse)."""
    error = ERRORS.get(code, ("error", ""))[0]
    reason = HTTP_STATUS_CODES.get(code, "Unknown Error")
    body = json.dumps(
        {"code": code, "status": reason, "error": error, "message": message},
        ensure_ascii=False,
    ).encode()
    head = (
        f"HTTP/1.1 {code} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


class _Page:
    """Stands in for the client socket while gunicorn writes its HTML error page, so the
    status gunicorn chose can be read back (util.write_error -> write_nonblock -> sendall)."""

    def __init__(self):
        self.data = bytearray()

    def gettimeout(self):
        return 0.0

    def setblocking(self, flag):
        pass

    def sendall(self, data):
        self.data += data

    def status(self):
        """The status code of the page written, or None when nothing parseable was."""
        line = bytes(self.data).split(b"\r\n", 1)[0].split()
        if len(line) >= 2 and line[0].startswith(b"HTTP/") and line[1].isdigit():
            return int(line[1])
        return None


class JsonErrorThreadWorker(ThreadWorker):
    """gunicorn's gthread worker whose own error responses are JSON (see the module doc)."""

    def handle_error(self, req, client, addr, exc):
        page = _Page()
        # gunicorn classifies the error, logs it (and the access line), and writes its page
        # into `page` instead of the socket.
        super().handle_error(req, page, addr, exc)
        code = page.status()
        if code is None:
            # Nothing recognisable was written: let gunicorn answer as it would.
            super().handle_error(req, client, addr, exc)
            return
        message = ERRORS.get(code, ("error", "The request failed"))[1]
        if code < 500:
            # gunicorn's reason (sizes, the offending part) helps the sender; a 5xx reason
            # may hold internals, and is in the error log already.
            message = f"{message}: {str(exc)[:200]}"
        try:
            util.write_nonblock(client, json_error(code, message + "."))
        except Exception:
            self.log.debug("Failed to send error message.")
