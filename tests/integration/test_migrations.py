"""The real migrations, up from empty, down to base and up again, on their own database."""

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

TABLES = {"conversations", "messages", "held_messages"}


@pytest.fixture(scope="module")
def migrations_url():
    """A fresh database next to the test one, used only by this module."""
    url = make_url(database_url(conftest.TEST_DATABASE_URL))
    name = f"{url.database}_migrations"
    server = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield url.set(database=name).render_as_string(hide_password=False)
    with server.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    server.dispose()


@pytest.fixture
def migrations_app(migrations_url, redis_conn):
    """An app on the migrations database, emptied first, inside its app context."""
    conftest.reset_schema(migrations_url)
    app = create_app(conftest.app_config(SQLALCHEMY_DATABASE_URI=migrations_url))
    with app.app_context():
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
