"""The layers of service/ import only downwards (service/__init__.py has the map).

Read from the source with `ast`, so a rule holds whether or not the import runs (an import
inside a function counts too). No services needed.
"""

import ast
from pathlib import Path

import pytest

SERVICE = Path(__file__).resolve().parents[2] / "service"

# The service's own modules each layer must not import.
FORBIDDEN_OWN = {
    "domain": ("service.",),
    "infra": ("service.pipeline", "service.api", "service.jobs", "service.cli"),
    "pipeline": ("service.api", "service.jobs", "service.cli"),
    "api": ("service.jobs", "service.cli"),
    "jobs": ("service.api", "service.cli"),
    "cli": ("service.api",),
    "extensions": ("service.",),
    "config": ("service.",),
}
# Libraries a layer must not import: the domain is pure; the pipeline knows no HTTP.
FORBIDDEN_LIBRARIES = {
    "domain": (
        "flask",
        "werkzeug",
        "sqlalchemy",
        "flask_sqlalchemy",
        "psycopg2",
        "redis",
        "rq",
        "rq_scheduler",
        "marshmallow",
        "flask_smorest",
    ),
    "infra": ("flask_smorest", "marshmallow", "webargs", "werkzeug"),
    "pipeline": ("flask_smorest", "marshmallow", "webargs", "werkzeug"),
}
# Names of Flask that belong to a request: below the HTTP layer only `current_app` is used.
REQUEST_NAMES = {"request", "g", "abort", "session", "Response", "jsonify", "Blueprint"}


def layer_of(path):
    """'domain', 'infra', ... for a module of service/; the module's name for the shell."""
    relative = path.relative_to(SERVICE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def imports(path):
    """(module, names) for every import statement in a file, relative ones resolved."""
    package = ["service", *path.relative_to(SERVICE).parent.parts]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            names = tuple(alias.name for alias in node.names)
            found.append((module, names))
            # `from service.pipeline import replies` imports the module service.pipeline.replies
            found += [(f"{module}.{name}", ()) for name in names]
    return found


def violations(path):
    layer = layer_of(path)
    own = FORBIDDEN_OWN.get(layer, ())
    libraries = FORBIDDEN_LIBRARIES.get(layer, ())
    problems = []
    for module, names in imports(path):
        if any(module == rule.rstrip(".") or module.startswith(rule) for rule in own):
            if not (layer == "domain" and module.startswith("service.domain")):
                problems.append(f"{layer} imports {module}")
        if module.split(".")[0] in libraries:
            problems.append(f"{layer} imports the library {module}")
        if layer in ("infra", "pipeline") and module == "flask":
            problems += [f"{layer} imports flask.{n}" for n in names if n in REQUEST_NAMES]
    return problems


def service_modules():
    return sorted(SERVICE.rglob("*.py"))


@pytest.mark.parametrize(
    "path", service_modules(), ids=lambda p: str(p.relative_to(SERVICE.parent))
)
def test_module_imports_only_lower_layers(path):
    assert violations(path) == []


def test_every_layer_exists_with_its_docstring():
    for package in ("domain", "infra", "pipeline", "api"):
        init = SERVICE / package / "__init__.py"
        assert ast.get_docstring(ast.parse(init.read_text())), f"{package} has no docstring"


@pytest.mark.parametrize(
    "layer, source, problem",
    [
        ("domain", "import flask", "domain imports the library flask"),
        ("domain", "from sqlalchemy import select", "domain imports the library sqlalchemy"),
        ("domain", "from service.infra import models", "domain imports service.infra"),
        ("infra", "from service.api.errors import abort", "infra imports service.api.errors"),
        ("infra", "from service.pipeline import groups", "infra imports service.pipeline"),
        ("pipeline", "from flask import request", "pipeline imports flask.request"),
        ("pipeline", "from ..api import errors", "pipeline imports service.api"),
        ("api", "from service import jobs", "api imports service.jobs"),
    ],
)
def test_a_broken_rule_is_found(tmp_path, monkeypatch, layer, source, problem):
    """The check itself: an upward import planted in a layer is reported."""
    root = tmp_path / "service"
    (root / layer).mkdir(parents=True)
    module = root / layer / "planted.py"
    module.write_text(source + "\n")
    monkeypatch.setattr(f"{__name__}.SERVICE", root)
    assert any(found.startswith(problem) for found in violations(module)), violations(module)
