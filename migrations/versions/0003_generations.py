"""generations: groups closed and waiting for REPLY_GENERATOR_URL's reply

A group's messages are linked to their reply's id when the group closes, before the reply
exists (it is written once the team's bot answers), so messages.reply_id no longer references
messages.id.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 03:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

PENDING = sa.text("status = 'pending'")


def upgrade():
    _drop_message_indexes()
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_constraint('fk_messages_reply_id_messages', type_='foreignkey')
    _restore_message_indexes()

    op.create_table('generations',
    sa.Column('reply_id', sa.Uuid(), nullable=False),
    sa.Column('conversation_id', sa.Uuid(), nullable=False),
    sa.Column('status', sa.String(length=7), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('leased_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_status', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('source', sa.String(length=9), nullable=True),
    sa.Column('stored_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('pending', 'stored', 'failed')", name=op.f('ck_generations_status')),
    sa.CheckConstraint("source IS NULL OR source IN ('generator', 'template')", name=op.f('ck_generations_source')),
    sa.ForeignKeyConstraint(['conversation_id'], ['conversations.id'], name=op.f('fk_generations_conversation_id_conversations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('reply_id', name=op.f('pk_generations'))
    )
    with op.batch_alter_table('generations', schema=None) as batch_op:
        batch_op.create_index('ix_generations_conversation_id_created_at', ['conversation_id', 'created_at', 'reply_id'], unique=False)
        batch_op.create_index('ix_generations_pending', ['next_attempt_at'], unique=False, postgresql_where=PENDING, sqlite_where=PENDING)
        batch_op.create_index('ix_generations_pending_by_conversation', ['conversation_id', 'created_at', 'reply_id'], unique=False, postgresql_where=PENDING, sqlite_where=PENDING)
        batch_op.create_index('ix_generations_status', ['status'], unique=False)


def downgrade():
    with op.batch_alter_table('generations', schema=None) as batch_op:
        batch_op.drop_index('ix_generations_status')
        batch_op.drop_index('ix_generations_pending_by_conversation', postgresql_where=PENDING, sqlite_where=PENDING)
        batch_op.drop_index('ix_generations_pending', postgresql_where=PENDING, sqlite_where=PENDING)
        batch_op.drop_index('ix_generations_conversation_id_created_at')

    op.drop_table('generations')
    # Replies still being generated have no message to reference: their groups go back to
    # unanswered, and the template answers them.
    op.execute(
        "UPDATE messages SET reply_id = NULL WHERE reply_id IS NOT NULL"
        " AND reply_id NOT IN (SELECT id FROM messages)"
    )
    _drop_message_indexes()
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.create_foreign_key('fk_messages_reply_id_messages', 'messages', ['reply_id'], ['id'])
    _restore_message_indexes()


UNANSWERED = sa.text("type = 'INBOUND' AND reply_id IS NULL")


MESSAGE_INDEXES = ('ix_messages_conversation_id_received_at', 'ix_messages_reply_id', 'ix_messages_unanswered')


def _drop_message_indexes():
    # SQLite changes a constraint by copying the table, and what the copy does with the
    # indexes depends on what it can read back (not a partial index's WHERE): they are
    # dropped first and made again after. PostgreSQL alters the table in place.
    if op.get_bind().dialect.name == 'sqlite':
        for name in MESSAGE_INDEXES:
            op.execute(f'DROP INDEX IF EXISTS {name}')


def _restore_message_indexes():
    if op.get_bind().dialect.name != 'sqlite':
        return
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.create_index('ix_messages_conversation_id_received_at', ['conversation_id', 'received_at', 'id'], unique=False)
        batch_op.create_index('ix_messages_reply_id', ['reply_id'], unique=False)
        batch_op.create_index('ix_messages_unanswered', ['conversation_id', 'received_at'], unique=False, postgresql_where=UNANSWERED, sqlite_where=UNANSWERED)
