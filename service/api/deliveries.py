"""Deliveries out, and the operator's retry of dead ones (issue 13, "Operating it")."""

from flask.views import MethodView

from service.api.conversations import decode_cursor, encode_cursor
from service.api.errors import Blueprint, abort
from service.api.schemas import (
    DeliveryPageSchema,
    DeliveryQueryArgsSchema,
    DeliverySchema,
    RetriedSchema,
    RetryDeadSchema,
)
from service.domain.delivery import DEAD
from service.pipeline import deliveries, queries

blp = Blueprint(
    "deliveries",
    __name__,
    url_prefix="/deliveries",
    description="Deliveries of the replies to REPLY_WEBHOOK_URL (the outbox), and the retry "
    "of dead ones. Empty while delivery is off.",
)


def _found(reply_id):
    delivery = queries.get_delivery(reply_id)
    if delivery is None:
        abort(404, "delivery_not_found", "No delivery for this reply id.")
    return delivery


@blp.route("/", strict_slashes=False)
class Deliveries(MethodView):
    @blp.arguments(DeliveryQueryArgsSchema, location="query")
    @blp.response(200, DeliveryPageSchema)
    def get(self, args):
        """List deliveries, newest reply first."""
        after = decode_cursor(args["cursor"]) if "cursor" in args else None
        items, next_after = queries.list_deliveries(
            args.get("status"), args.get("conversation_id"), args["limit"], after
        )
        return {"items": items, "next_cursor": encode_cursor(next_after) if next_after else None}


@blp.route("/<id:reply_id>/", strict_slashes=False)
class DeliveryById(MethodView):
    @blp.response(200, DeliverySchema)
    @blp.alt_response(404, description="No delivery for this reply id")
    def get(self, reply_id):
        """Show the delivery of one reply."""
        return _found(reply_id)


@blp.route("/<id:reply_id>/retry", strict_slashes=False)
class DeliveryRetry(MethodView):
    @blp.response(200, DeliverySchema)
    @blp.alt_response(404, description="No delivery for this reply id")
    @blp.alt_response(409, description="The delivery is not dead (error `not_dead`)")
    def post(self, reply_id):
        """Send a dead reply again: it is pending at once, with a new retry window."""
        delivery = _found(reply_id)
        if delivery["status"] == DEAD and deliveries.retry_deliveries(reply_ids=[reply_id]):
            return queries.get_delivery(reply_id)
        # Also when another retry got there first: read again to say what it is now.
        status = (queries.get_delivery(reply_id) or delivery)["status"]
        abort(409, "not_dead", f"Only a dead delivery can be retried; this one is {status}.")


@blp.route("/retry", strict_slashes=False)
class DeliveriesRetry(MethodView):
    @blp.arguments(RetryDeadSchema)
    @blp.response(200, RetriedSchema)
    def post(self, args):
        """Send every dead reply again; answers how many went back to pending."""
        return {"retried": deliveries.retry_deliveries(all_dead=True)}
