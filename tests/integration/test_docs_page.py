"""The API documentation page answers however its address is typed."""

import pytest


@pytest.mark.parametrize("query", ["", "?x=1"])
def test_docs_with_a_slash_leads_to_the_swagger_ui(client, query):
    response = client.get(f"/docs/{query}")

    assert response.status_code == 308
    assert response.headers["Location"] == "/docs"
    followed = client.get("/docs/", follow_redirects=True)
    assert followed.status_code == 200
    assert "swagger-ui" in followed.get_data(as_text=True)


def test_docs_without_a_slash_is_the_page_itself(client):
    response = client.get("/docs")

    assert response.status_code == 200
    assert response.mimetype == "text/html"
