"""The OpenAPI document and the Swagger UI that renders it, with no internet."""

import re

import pytest
import schemathesis

EVENT_SCHEMAS = ["NewConversationEvent", "NewMessageEvent", "CloseConversationEvent"]


@pytest.fixture
def spec(client):
    """The served OpenAPI document."""
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return response.get_json()


def test_document_is_valid_openapi_3(spec):
    assert spec["openapi"].startswith("3.")
    schemathesis.openapi.from_dict(spec).validate()


def test_validation_catches_a_broken_document(spec):
    broken = {**spec, "paths": {"/webhook/": {"post": {"responses": "none"}}}}
    with pytest.raises(Exception, match="responses"):
        schemathesis.openapi.from_dict(broken).validate()


def test_every_path_is_documented(spec):
    assert set(spec["paths"]) >= {
        "/webhook/",
        "/conversations/",
        "/conversations/{conversation_id}/",
        "/conversations/{conversation_id}/activity",
        "/held/",
        "/deliveries/",
        "/deliveries/{reply_id}/",
        "/deliveries/{reply_id}/retry",
        "/deliveries/retry",
        "/generations/",
        "/generations/{reply_id}/",
        "/generations/{reply_id}/retry",
        "/generations/retry",
    }
    for path in spec["paths"].values():
        for method, operation in path.items():
            if method != "parameters":
                assert operation["summary"], operation


def test_webhook_body_is_one_of_the_three_events(spec):
    body = spec["paths"]["/webhook/"]["post"]["requestBody"]
    assert body["required"] is True
    media = body["content"]["application/json"]
    assert media["schema"]["oneOf"] == [
        {"$ref": f"#/components/schemas/{name}"} for name in EVENT_SCHEMAS
    ]
    assert media["schema"]["discriminator"] == {"propertyName": "type"}
    examples = media["examples"]
    assert set(examples) == {"NEW_CONVERSATION", "NEW_MESSAGE", "CLOSE_CONVERSATION"}
    for name, example in examples.items():
        assert example["value"]["type"] == name
    components = spec["components"]["schemas"]
    for name in EVENT_SCHEMAS:
        assert set(components[name]["required"]) == {"type", "timestamp", "data"}


def test_webhook_examples_are_accepted(client, spec):
    examples = spec["paths"]["/webhook/"]["post"]["requestBody"]["content"]["application/json"]
    statuses = [
        client.post("/webhook/", json=examples["examples"][name]["value"]).status_code
        for name in ("NEW_CONVERSATION", "NEW_MESSAGE", "CLOSE_CONVERSATION")
    ]
    assert statuses == [201, 202, 200]


def test_webhook_documents_every_status(spec):
    responses = spec["paths"]["/webhook/"]["post"]["responses"]
    assert {"200", "201", "202", "400", "413", "415", "503"} <= set(responses)


def test_swagger_ui_uses_only_local_assets(client):
    response = client.get("/docs")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert not re.search(r"https?://", html), "the docs page must work offline"
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any(a.endswith(".js") for a in assets) and any(a.endswith(".css") for a in assets)
    for asset in assets:
        assert asset.startswith("/"), asset
        with client.get(asset) as answer:
            assert answer.status_code == 200, asset
            assert answer.data
    assert "/openapi.json" in html


def test_front_page_redirects_to_the_docs(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/docs")
