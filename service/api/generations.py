"""Closed groups and their replies from the team's bot, and the operator's retry of failed ones
(issue 13, "Reply generator")."""

from flask.views import MethodView

from service.api.conversations import decode_cursor, encode_cursor
from service.api.errors import Blueprint, abort
from service.api.schemas import (
    GenerationPageSchema,
    GenerationQueryArgsSchema,
    GenerationSchema,
    RetriedGroupsSchema,
    RetryFailedSchema,
)
from service.domain.generation import FAILED
from service.pipeline import generations, queries

blp = Blueprint(
    "generations",
    __name__,
    url_prefix="/generations",
    description="Groups closed for REPLY_GENERATOR_URL and where their replies stand, and the "
    "retry of failed ones. Empty while the generator is off.",
)


def _found(reply_id):
    generation = queries.get_generation(reply_id)
    if generation is None:
        abort(404, "generation_not_found", "No group closed for the generator with this reply id.")
    return generation


@blp.route("/", strict_slashes=False)
class Generations(MethodView):
    @blp.arguments(GenerationQueryArgsSchema, location="query")
    @blp.response(200, GenerationPageSchema)
    def get(self, args):
        """List closed groups, newest first."""
        after = decode_cursor(args["cursor"]) if "cursor" in args else None
        items, next_after = queries.list_generations(
            args.get("status"), args.get("conversation_id"), args["limit"], after
        )
        return {"items": items, "next_cursor": encode_cursor(next_after) if next_after else None}


@blp.route("/<id:reply_id>/", strict_slashes=False)
class GenerationById(MethodView):
    @blp.response(200, GenerationSchema)
    @blp.alt_response(404, description="No group closed for the generator with this reply id")
    def get(self, reply_id):
        """Show one closed group and where its reply stands."""
        return _found(reply_id)


@blp.route("/<id:reply_id>/retry", strict_slashes=False)
class GenerationRetry(MethodView):
    @blp.response(200, GenerationSchema)
    @blp.alt_response(404, description="No group closed for the generator with this reply id")
    @blp.alt_response(409, description="The group has not failed (error `not_failed`)")
    def post(self, reply_id):
        """Ask the generator again for a failed group: pending at once, with fresh attempts."""
        generation = _found(reply_id)
        if generation["status"] == FAILED and generations.retry_generations(reply_ids=[reply_id]):
            return queries.get_generation(reply_id)
        status = (queries.get_generation(reply_id) or generation)["status"]
        abort(409, "not_failed", f"Only a failed group can be retried; this one is {status}.")


@blp.route("/retry", strict_slashes=False)
class GenerationsRetry(MethodView):
    @blp.arguments(RetryFailedSchema)
    @blp.response(200, RetriedGroupsSchema)
    def post(self, args):
        """Ask the generator again for every failed group; answers how many are pending again."""
        return {"retried": generations.retry_generations(all_failed=True)}
