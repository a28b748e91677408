"""Optional webhook signatures: the WhatsApp Cloud API's X-Hub-Signature-256 scheme."""

import hashlib
import hmac

from flask import current_app, request

from service.api.errors import abort

HEADER = "X-Hub-Signature-256"


def sign(secret, body):
    """The header value a sender computes for a body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def check_signature(body):
    """When secrets are configured, require a matching signature (any of them, for rotation)."""
    secrets = current_app.config["WEBHOOK_SECRETS"]
    if not secrets:
        return
    given = request.headers.get(HEADER, "")
    # Compare against every secret so the time taken does not tell which one matched.
    matches = [hmac.compare_digest(given.encode(), sign(s, body).encode()) for s in secrets]
    if not any(matches):
        abort(401, "invalid_signature", f"Missing or wrong {HEADER} header.")
