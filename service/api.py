"""Project-wide flask-smorest settings: 400 for invalid input, one JSON error shape."""

import logging

import redis.exceptions
import sqlalchemy.exc
from webargs.flaskparser import FlaskParser

from flask import current_app
from werkzeug.exceptions import HTTPException, MethodNotAllowed, ServiceUnavailable

import flask_smorest
import marshmallow as ma

from service.rules import Rejected

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
        payload, status, headers = super().handle_http_exception(error)
        data = getattr(error, "data", None) or {}
        payload["error"] = data.get("error") or DEFAULT_ERROR_CODES.get(status, "error")
        payload.setdefault("message", error.description)
        # flask-smorest keeps only headers passed to abort(); RFC 9110 requires Allow on a 405.
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            headers = {**(headers or {}), "Allow": ", ".join(error.valid_methods)}
        return payload, status, headers

    def handle_rejected(self, error):
        """An event that breaks a business rule: 400 with the rule's code."""
        return (
            {"code": 400, "status": "Bad Request", "error": error.error, "message": error.message},
            400,
        )

    def handle_unavailable(self, error):
        """A dependency is down: ask the sender to retry instead of answering 500."""
        log.warning("dependency unavailable: %s: %s", type(error).__name__, error)
        retry_after = str(current_app.config["RETRY_AFTER_SECONDS"])
        exc = ServiceUnavailable("A dependency (database or Redis) is unavailable; retry later.")
        exc.data = {"headers": {"Retry-After": retry_after}}
        return self.handle_http_exception(exc)


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
    """Raise an HTTP error with a machine-readable code."""
    flask_smorest.abort(status, error=error, message=message, **kwargs)


__all__ = ["Api", "Blueprint", "ErrorSchema", "HTTPException", "abort", "docs_only"]
