"""Read access: bearer tokens in front of what shows customers' data (../shared/SPEC.md,
"Access").

With `API_TOKEN` set, the conversation and held-message reads, the deliveries (their retry
too) and the live stream need
`Authorization: Bearer <token>` (any of the configured tokens, so one can be rotated in before
the old one is dropped); with `METRICS_TOKEN` set, so does `/metrics`. Anything else is
answered 401 `unauthorized` with `WWW-Authenticate: Bearer`. Without a token configured,
nothing is checked. The health checks, the webhook (it has its own signature), the console's
static files and the API document stay open: they hold no data.
"""

import hmac
from functools import wraps

from flask import current_app, request

from apispec import BasePlugin

from service.api.errors import abort

SCHEME = "bearerAuth"
# Which setting guards what, and what a caller is told to send.
API = ("API_TOKENS", "API_TOKEN")
METRICS = ("METRICS_TOKENS", "METRICS_TOKEN")

_protected = set()


def presented_token():
    """The token of an `Authorization: Bearer <token>` header (scheme case-insensitive,
    RFC 6750 section 2.1), or None when there is no such header."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def check_token(guard):
    """Nothing when the guard's setting holds no token or the request presents one of them;
    otherwise raise 401 `unauthorized` with a `WWW-Authenticate: Bearer` challenge.

    `guard` is `API` or `METRICS`. Every configured token is compared in constant time, and
    all of them always are, so the time taken tells neither how much of a token matched nor
    which one did.
    """
    setting, variable = guard
    tokens = current_app.config[setting]
    if not tokens:
        return
    given = presented_token()
    offered = (given or "").encode()
    matches = [hmac.compare_digest(offered, token.encode()) for token in tokens]
    if given is not None and any(matches):
        return
    # RFC 6750 section 3.1: a presented but refused token is an invalid_token.
    challenge = 'Bearer error="invalid_token"' if given is not None else "Bearer"
    abort(
        401,
        "unauthorized",
        f"Missing or wrong bearer token: send 'Authorization: Bearer <token>' with a token "
        f"of {variable}.",
        headers={"WWW-Authenticate": challenge},
    )


def require_api_token():
    """Before every request of a protected blueprint: the API token, when one is set."""
    check_token(API)


def protect(*blueprints):
    """Require the API token on every view of these blueprints.

    Call before registering them. They are module globals registered on every app built
    (the tests build many), and Flask refuses a new hook on a blueprint once registered,
    so each gets its hook once per process.
    """
    for blueprint in blueprints:
        if blueprint not in _protected:
            blueprint.before_request(require_api_token)
            _protected.add(blueprint)


def token_required(guard):
    """Decorate one view (outside the protected blueprints) to need the `guard`'s token."""

    def decorator(view):
        @wraps(view)
        def checked(*args, **kwargs):
            check_token(guard)
            return view(*args, **kwargs)

        return checked

    return decorator


class BearerSecurityPlugin(BasePlugin):
    """Documents the bearer scheme in the OpenAPI document (so Swagger UI's Authorize button
    sends it) and marks the operations of the protected blueprints as needing it."""

    def init_spec(self, spec):
        super().init_spec(spec)
        spec.components.security_scheme(
            SCHEME,
            {
                "type": "http",
                "scheme": "bearer",
                "description": "One of the tokens of API_TOKEN. Needed by the reads and the "
                "delivery retries only when API_TOKEN is set; without it they are open.",
            },
        )

    def operation_helper(self, path=None, operations=None, **kwargs):
        rule = kwargs.get("rule")
        if rule is None or rule.endpoint.split(".")[0] not in {b.name for b in _protected}:
            return
        for operation in operations.values():
            operation.setdefault("security", [{SCHEME: []}])
            operation.setdefault("responses", {}).setdefault("401", "UNAUTHORIZED")
