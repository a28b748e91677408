"""docs/requests.http stays true to the API: every request matches an OpenAPI operation."""

import json
import re
from pathlib import Path

from service.api.schemas import load_event

COLLECTION = Path(__file__).resolve().parents[2] / "docs" / "requests.http"


def parse_collection():
    text = COLLECTION.read_text()
    variables = dict(re.findall(r"^@(\w+) = (.+)$", text, re.M))
    requests = []
    for block in text.split("###")[1:]:
        _title, request_line, *rest = block.strip().splitlines()
        method, url = request_line.split(" ", 1)
        headers_and_body = "\n".join(rest)
        body = headers_and_body.split("\n\n", 1)[1] if "\n\n" in headers_and_body else None
        for name, value in variables.items():
            url = url.replace(f"{{{{{name}}}}}", value)
            body = body.replace(f"{{{{{name}}}}}", value) if body else body
        requests.append((method, url.replace(variables["base"], ""), body))
    return requests


def test_every_request_matches_an_operation(client):
    spec = client.get("/openapi.json").get_json()
    patterns = {
        re.sub(r"\{[^}]+\}", "[^/]+", path) + r"(\?.*)?$": ops
        for path, ops in spec["paths"].items()
    }
    requests = parse_collection()
    assert len(requests) >= 8
    for method, path, body in requests:
        matching = [ops for pattern, ops in patterns.items() if re.match(pattern, path)]
        assert matching and method.lower() in matching[0], f"{method} {path} is not in the API"
        if body:
            load_event(json.loads(body), max_message_chars=4096)


def test_collection_plays_against_the_app(client):
    statuses = []
    for method, path, body in parse_collection():
        response = client.open(path, method=method, data=body, content_type="application/json")
        statuses.append(response.status_code)
    assert statuses == [201, 202, 202, 200, 200, 200, 200, 200, 200]
