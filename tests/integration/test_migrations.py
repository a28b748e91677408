"""The real migrations, up from empty, down to base and up again, in a schema of their own.

They run in the test database (TEST_DATABASE_URL, the only one the tests use), in the schema
`migrations_check`, put first on the search path through the connection's options: the other
tests' tables in `public` are never touched, and no other database is created.
"""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, ProgrammingError

from service import create_app
from service.config import database_url
from service.extensions import db
from tests import conftest

TABLES = {"conversations", "messages", "held_messages", "deliveries", "generations"}
SCHEMA = "migrations_check"


def recreate_schema(create=True):
    """Drop the migrations' schema with everything in it, and create it empty again."""
    engine = create_engine(database_url(conftest.TEST_DATABASE_URL))
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE'))
        if create:
            conn.execute(text(f'CREATE SCHEMA "{SCHEMA}"'))
    engine.dispose()


@pytest.fixture(scope="module")
def migrations_url():
    """The test database's URL with `migrations_check` first on the search path."""
    url = make_url(database_url(conftest.TEST_DATABASE_URL))
    yield url.update_query_dict({"options": f"-csearch_path={SCHEMA}"}).render_as_string(
        hide_password=False
    )
    recreate_schema(create=False)


@pytest.fixture
def migrations_app(migrations_url, redis_conn):
    """An app on the migrations schema, emptied first, inside its app context."""
    recreate_schema()
    app = create_app(conftest.app_config(SQLALCHEMY_DATABASE_URI=migrations_url))
    with app.app_context():
        assert db.session.execute(text("SELECT current_schema()")).scalar_one() == SCHEMA
        db.session.rollback()
        yield app
        db.session.remove()
        db.engine.dispose()


def tables():
    return set(inspect(db.engine).get_table_names())


def insert_conversation(status):
    with db.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO conversations (id, status, created_at, updated_at) "
                "VALUES (gen_random_uuid(), :status, now(), now())"
            ),
            {"status": status},
        )


def schema_diff():
    """What autogenerate would write to make the database match the models."""
    with db.engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn), db.metadata)


def test_upgrade_downgrade_upgrade(migrations_app):
    assert tables() == set()

    upgrade()
    assert tables() == TABLES | {"alembic_version"}
    insert_conversation("OPEN")
    with pytest.raises(IntegrityError, match="ck_conversations_status"):
        insert_conversation("BOGUS")
    checks = {c["name"] for c in inspect(db.engine).get_check_constraints("messages")}
    assert {"ck_messages_type", "ck_messages_reply_only_inbound"} <= checks

    downgrade(revision="base")
    assert tables() == {"alembic_version"}
    with pytest.raises(ProgrammingError, match="conversations"):
        insert_conversation("BOGUS")

    upgrade()
    assert tables() == TABLES | {"alembic_version"}
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM conversations")).scalar_one() == 0
    with pytest.raises(IntegrityError, match="ck_conversations_status"):
        insert_conversation("BOGUS")


def test_models_and_migrations_agree(migrations_app):
    upgrade()
    assert schema_diff() == []


def test_the_comparison_sees_a_missing_table(migrations_app):
    upgrade()
    with db.engine.begin() as conn:
        conn.execute(text("DROP TABLE held_messages"))
    action, table = schema_diff()[0][:2]
    assert (action, table.name) == ("add_table", "held_messages")
