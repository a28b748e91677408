"""Project-wide flask-smorest settings and the one error path: every error the service
answers, 4xx or 503, is JSON of one shape (../shared/SPEC.md, "Events in"):
`{"code", "status", "error", "message", "errors"?}`.
"""

import logging

import redis.exceptions
import sqlalchemy.exc
from webargs.flaskparser import FlaskParser

from flask import current_app
from werkzeug.exceptions import MethodNotAllowed
from werkzeug.http import HTTP_STATUS_CODES

import flask_smorest
import marshmallow as ma

from service.domain.rules import Rejected

log = logging.getLogger(__name__)

# Machine-readable codes for errors raised by Flask/Werkzeug themselves.
DEFAULT_ERROR_CODES = {
    400: "bad_request",
    401: "invalid_signature",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    500: "internal_error",
    503: "service_unavailable",
}

# Connection-level failures of a dependency: the request can be retried later.
UNAVAILABLE = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ReadOnlyError,
)


class ErrorSchema(ma.Schema):
    """Every error response."""

    code = ma.fields.Integer(required=True, metadata={"description": "HTTP status code"})
    status = ma.fields.String(required=True, metadata={"description": "HTTP status name"})
    error = ma.fields.String(
        required=True,
        metadata={"description": "Machine-readable error code", "example": "bad_request"},
    )
    message = ma.fields.String(metadata={"description": "Human-readable explanation"})
    errors = ma.fields.Dict(metadata={"description": "Field-level validation errors"})


def error_body(code, error, message, **extra):
    """The JSON body of an error: `code` is the HTTP status, `error` the machine-readable
    code, `message` the human one; `extra` adds fields (e.g. `errors`, `checks`)."""
    return {
        "code": code,
        "status": HTTP_STATUS_CODES.get(code, "Unknown Error"),
        "error": error,
        "message": message,
        **extra,
    }


def unavailable(message, error="service_unavailable", **extra):
    """A 503 (body, status, headers) with Retry-After (RETRY_AFTER_SECONDS): the sender may
    retry later, and nothing was changed."""
    headers = {"Retry-After": str(current_app.config["RETRY_AFTER_SECONDS"])}
    return error_body(503, error, message, **extra), 503, headers


class Parser(FlaskParser):
    DEFAULT_VALIDATION_STATUS = 400


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest blueprint answering 400 for invalid arguments."""

    ARGUMENTS_PARSER = Parser()


class Api(flask_smorest.Api):
    ERROR_SCHEMA = ErrorSchema

    def _register_error_handlers(self):
        super()._register_error_handlers()
        self._app.register_error_handler(Rejected, self.handle_rejected)
        for exc in UNAVAILABLE:
            self._app.register_error_handler(exc, self.handle_unavailable)

    def handle_http_exception(self, error):
        """Every HTTPException (abort, 404, 405, 413...) in the one error shape."""
        payload, status, headers = super().handle_http_exception(error)
        data = getattr(error, "data", None) or {}
        code = data.get("error") or DEFAULT_ERROR_CODES.get(status, "error")
        extra = {"errors": payload["errors"]} if "errors" in payload else {}
        message = payload.get("message")
        if message is None:
            # Werkzeug's stock 400 text ("The browser (or proxy) sent...") says nothing useful
            # when the fields at fault are listed.
            message = "Invalid request parameters; see errors." if extra else error.description
        payload = error_body(status, code, message, **extra)
        # flask-smorest keeps only headers passed to abort(); RFC 9110 requires Allow on a 405.
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            headers = {**(headers or {}), "Allow": ", ".join(error.valid_methods)}
        return payload, status, headers

    def handle_rejected(self, error):
        """An event that breaks a business rule: 400 with the rule's code."""
        return error_body(400, error.error, error.message), 400

    def handle_unavailable(self, error):
        """A dependency is down: ask the sender to retry instead of answering 500."""
        log.warning("dependency_unavailable", extra={"reason": f"{type(error).__name__}: {error}"})
        return unavailable("A dependency (database or Redis) is unavailable; retry later.")


def docs_only(*decorators):
    """Apply flask-smorest documentation decorators, keeping their docs but not their wrappers.

    `Blueprint.doc` and each `alt_response` wrap the view in a pass-through function whose
    only purpose is to carry `_apidoc`; on the webhook, nine of them cost more CPU per call
    than the whole request parsing. The collected `_apidoc` is put on the view itself.
    """

    def decorator(func):
        wrapped = func
        for decorate in reversed(decorators):
            wrapped = decorate(wrapped)
        func._apidoc = wrapped._apidoc
        return func

    return decorator


def abort(status, error, message, **kwargs):
    """Raise an HTTP error with a machine-readable code (`kwargs`: `errors`, `headers`)."""
    flask_smorest.abort(status, error=error, message=message, **kwargs)
