"""Property-based runs on PostgreSQL: no input yields a 5xx, and every 4xx is the JSON error
shape (../shared/SPEC.md, "Events in").

Two kinds of run. Schemathesis walks the OpenAPI contract: every operation, then the reads
again with a larger budget. Hypothesis strategies then reach what the document cannot
describe: cursors (opaque to the document, structured to the service), ids in the path in
any form, and query text with control characters, which schemathesis rarely generates.

The document is read at collection time from an app that is never used for requests (building
it connects to nothing); every generated case runs against an app on the suite's migrated
database with its per-test cleanup. `schemathesis.pytest.from_fixture` would avoid the
collection-time app, but schemathesis 4.32 reads a pytest attribute (`Function._nodeid`) that
pytest 9 no longer has. The apps require a read token, so schemathesis's authentication
checks (a request without it, or with a wrong one, is refused) run too.
"""

import base64
import string
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service import create_app
from tests import conftest

TOKEN = "fuzz-read-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

schema = schemathesis.openapi.from_wsgi("/openapi.json", create_app(conftest.app_config()))
# Unknown query parameters are ignored on purpose (as unknown body fields are), so the
# negative check "an undocumented parameter must be refused" does not apply.
schema.config.generation.update(allow_extra_parameters=False)
reads = schema.include(method="GET")

FUZZ = settings(
    deadline=None,
    derandomize=True,
    # One app for all examples on purpose: the contract must hold whatever earlier ones stored.
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)


@pytest.fixture
def guarded(make_app):
    """An app on the test database and Redis that requires the read token TOKEN."""
    app = make_app(API_TOKENS=[TOKEN])
    with app.app_context():
        yield app


def check_error_body(body, status):
    """An error is `{"code", "status", "error", "message", "errors"?}` with `code` = status."""
    assert set(body) - {"errors"} == {"code", "status", "error", "message"}, body
    assert body["code"] == status, body


def error_shape(ctx, response, case):
    """Schemathesis check: every 4xx and 5xx has the JSON error shape."""
    if response.status_code >= 400:
        check_error_body(response.json(), response.status_code)


def contract(case, app):
    # SPEC answers 400 to schema-valid input that breaks a rule (a conversation that exists,
    # a closed one, a cursor this service never gave out), so "valid data is accepted" is not
    # part of this contract. Every other check runs, including "never a 5xx".
    response = case.call_and_validate(
        app=app,
        headers=AUTH,
        additional_checks=[error_shape],
        excluded_checks=[schemathesis.checks.positive_data_acceptance],
    )
    assert response.status_code < 500


@schema.parametrize()
@settings(FUZZ, max_examples=40)
def test_api_contract(case, guarded):
    contract(case, guarded)


@reads.parametrize()
@settings(FUZZ, max_examples=120)
def test_read_contract(case, guarded):
    contract(case, guarded)


def get(client, url, **kwargs):
    """GET with the token; assert no 5xx and, for a 4xx, the JSON error shape."""
    response = client.get(url, headers=AUTH, **kwargs)
    assert response.status_code < 500, (url, kwargs, response.get_data(as_text=True))
    if response.status_code >= 400:
        check_error_body(response.get_json(), response.status_code)
    return response


# Text as a query string carries it: any code point a URL can encode, control characters
# and NUL weighted in.
query_text = st.text(
    st.one_of(st.characters(codec="utf-8"), st.characters(max_codepoint=0x9F)), max_size=40
)
CONTROL = {chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]}


@given(
    params=st.fixed_dictionaries(
        {},
        optional={
            "q": query_text,
            "status": query_text | st.sampled_from(["OPEN", "CLOSED"]),
            "limit": query_text | st.integers().map(str),
            "cursor": query_text,
        },
    )
)
@settings(FUZZ, max_examples=150)
def test_list_parameters(guarded, params):
    response = get(guarded.test_client(), "/conversations/", query_string=params)
    if CONTROL & set(params.get("q", "")):
        assert response.status_code == 400


def _cursor_text(offset, moment, ident, tail):
    zone = timezone(offset) if offset is not None else None
    return f"{moment.replace(tzinfo=zone).isoformat()}|{ident}{tail}"


offsets = st.none() | st.timedeltas(
    min_value=timedelta(hours=-23, minutes=-59, seconds=-59),
    max_value=timedelta(hours=23, minutes=59, seconds=59),
)
id_forms = st.builds(
    lambda ident, form: form(str(ident)),
    st.uuids(),
    st.sampled_from(
        [str, str.upper, lambda i: f"{{{i}}}", lambda i: i.replace("-", ""), lambda i: "+" + i]
    ),
)
# Cursors shaped like the ones the service gives, with every part varied: any offset Python
# takes, any year, ids in any form, trailing bytes; then base64 in both alphabets, with and
# without padding.
structured_cursors = st.builds(
    _cursor_text,
    offsets,
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)),
    id_forms,
    st.sampled_from(["", "\x00", "|", "x"]),
).flatmap(
    lambda raw: st.sampled_from(
        [
            base64.urlsafe_b64encode(raw.encode()).decode(),
            base64.urlsafe_b64encode(raw.encode()).decode().rstrip("="),
            base64.b64encode(raw.encode()).decode(),
        ]
    )
)


@given(cursor=structured_cursors | query_text)
@settings(FUZZ, max_examples=150)
def test_cursors(guarded, cursor):
    response = get(guarded.test_client(), "/conversations/", query_string={"cursor": cursor})
    if response.status_code != 200:
        assert response.status_code == 400
        assert response.get_json()["error"] in {"invalid_cursor", "bad_request"}


@given(
    ident=id_forms
    | st.text(string.hexdigits + "-{}:urnid+_x ", max_size=48)
    | st.text(st.characters(codec="utf-8"), max_size=48)
)
@settings(FUZZ, max_examples=100)
def test_ids_in_path_and_query(guarded, ident):
    client = guarded.test_client()
    path = quote(ident, safe="")
    for url in (f"/conversations/{path}/", f"/conversations/{path}/activity"):
        assert get(client, url).status_code in {200, 404}
    held = get(client, "/held/", query_string={"conversation_id": ident})
    assert held.status_code in {200, 400}
