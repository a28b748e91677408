"""Swagger UI served from an installed package, so /docs works with no internet."""

from swagger_ui_bundle import swagger_ui_path

from flask import Blueprint, redirect, send_from_directory, url_for

bp = Blueprint("swagger_assets", __name__)
ASSETS_URL = "/docs/assets/"


@bp.get(f"{ASSETS_URL}<path:filename>")
def asset(filename):
    """One Swagger UI file."""
    return send_from_directory(swagger_ui_path, filename, max_age=86400)


@bp.get("/")
def index():
    """The API documentation is the front page."""
    return redirect(url_for("api-docs.openapi_swagger_ui"))


@bp.get("/docs/")
def index_with_slash():
    """`/docs/`, as people type it (and as `/ui/` is spelled): 308 to the Swagger UI at `/docs`."""
    return redirect(url_for("api-docs.openapi_swagger_ui"), code=308)


def init_app(app):
    app.register_blueprint(bp)
