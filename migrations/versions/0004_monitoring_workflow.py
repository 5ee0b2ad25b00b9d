"""monitoring workflow: query threads, SDV marks, signatures, locks, data cuts, outbox

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27

Entries and subjects gain lock columns (and entries the data cut that froze them); queries gain
the columns of the full open/answered/closed/cancelled workflow. Partial indexes cover the
active SDV marks, valid signatures and pending outbox messages, which reports and the mailer read.

"""
from alembic import op
import sqlalchemy as sa

import edc.models.types


# revision identifiers, used by Alembic.
revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

APP_ROLE = "edc_application"
NEW_TABLES = ("data_cuts", "study_locks", "outbox", "data_cut_entries", "sdv_marks", "signatures", "query_messages")


def upgrade():
    op.create_table('data_cuts',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('cutoff_at', edc.models.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('created_at', edc.models.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('entry_count', sa.Integer(), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_data_cuts')),
    sa.UniqueConstraint('name', name=op.f('uq_data_cuts_name'))
    )
    op.create_table('study_locks',
    sa.Column('locked_at', edc.models.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('locked_by', sa.String(length=64), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('unlocked_at', edc.models.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('unlocked_by', sa.String(length=64), nullable=True),
    sa.Column('unlock_reason', sa.Text(), nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_study_locks'))
    )
    op.create_table('outbox',
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('dedupe_key', sa.String(length=128), nullable=False),
    sa.Column('site_id', sa.Uuid(), nullable=True),
    sa.Column('subject_number', sa.String(length=16), nullable=True),
    sa.Column('due_at', edc.models.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', edc.models.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('sent_at', edc.models.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', edc.models.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', edc.models.types.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("kind IN ('sae_new', 'critical_query', 'safety_clock_due')", name=op.f('ck_outbox_kind')),
    sa.CheckConstraint("status IN ('pending', 'sent', 'failed')", name=op.f('ck_outbox_status')),
    sa.ForeignKeyConstraint(['site_id'], ['sites.id'], name=op.f('fk_outbox_site_id_sites')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox')),
    sa.UniqueConstraint('dedupe_key', name=op.f('uq_outbox_dedupe_key'))
    )
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index('ix_outbox_pending_next', ['next_attempt_at'], unique=False, sqlite_where=sa.text("status = 'pending'"), postgresql_where=sa.text("status = 'pending'"))

    op.create_table('data_cut_entries',
    sa.Column('cut_id', sa.Uuid(), nullable=False),
    sa.Column('entry_id', sa.Uuid(), nullable=False),
    sa.Column('subject_id', sa.Uuid(), nullable=False),
    sa.Column('event_key', sa.String(length=64), nullable=False),
    sa.Column('form_id', sa.String(length=64), nullable=False),
    sa.Column('form_version', sa.String(length=16), nullable=False),
    sa.Column('entry_version', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('data', edc.models.types.JSONDocument(), nullable=False),
    sa.ForeignKeyConstraint(['cut_id'], ['data_cuts.id'], name=op.f('fk_data_cut_entries_cut_id_data_cuts')),
    sa.ForeignKeyConstraint(['entry_id'], ['entries.id'], name=op.f('fk_data_cut_entries_entry_id_entries')),
    sa.ForeignKeyConstraint(['subject_id'], ['subjects.id'], name=op.f('fk_data_cut_entries_subject_id_subjects')),
    sa.PrimaryKeyConstraint('cut_id', 'entry_id', name=op.f('pk_data_cut_entries'))
    )
    with op.batch_alter_table('data_cut_entries', schema=None) as batch_op:
        batch_op.create_index('ix_data_cut_entries_subject', ['cut_id', 'subject_id'], unique=False)

    op.create_table('sdv_marks',
    sa.Column('entry_id', sa.Uuid(), nullable=False),
    sa.Column('subject_id', sa.Uuid(), nullable=False),
    sa.Column('site_id', sa.Uuid(), nullable=False),
    sa.Column('form_id', sa.String(length=64), nullable=False),
    sa.Column('item_id', sa.String(length=64), nullable=True),
    sa.Column('entry_version', sa.Integer(), nullable=False),
    sa.Column('verified_by', sa.String(length=64), nullable=False),
    sa.Column('verified_at', edc.models.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('cleared_at', edc.models.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('cleared_by_change', sa.Uuid(), nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.ForeignKeyConstraint(['entry_id'], ['entries.id'], name=op.f('fk_sdv_marks_entry_id_entries')),
    sa.ForeignKeyConstraint(['site_id'], ['sites.id'], name=op.f('fk_sdv_marks_site_id_sites')),
    sa.ForeignKeyConstraint(['subject_id'], ['subjects.id'], name=op.f('fk_sdv_marks_subject_id_subjects')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sdv_marks'))
    )
    with op.batch_alter_table('sdv_marks', schema=None) as batch_op:
        batch_op.create_index('ix_sdv_marks_active_entry', ['entry_id'], unique=False, sqlite_where=sa.text('cleared_at IS NULL'), postgresql_where=sa.text('cleared_at IS NULL'))
        batch_op.create_index('ix_sdv_marks_site_form', ['site_id', 'form_id'], unique=False)

    op.create_table('signatures',
    sa.Column('subject_id', sa.Uuid(), nullable=False),
    sa.Column('site_id', sa.Uuid(), nullable=False),
    sa.Column('entry_id', sa.Uuid(), nullable=True),
    sa.Column('entry_version', sa.Integer(), nullable=True),
    sa.Column('signer_id', sa.Uuid(), nullable=False),
    sa.Column('signer_username', sa.String(length=64), nullable=False),
    sa.Column('printed_name', sa.String(length=200), nullable=False),
    sa.Column('meaning', sa.String(length=32), nullable=False),
    sa.Column('signed_at', edc.models.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('key_id', sa.Integer(), nullable=False),
    sa.Column('invalidated_at', edc.models.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('invalidated_by_change', sa.Uuid(), nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.CheckConstraint("meaning IN ('approval', 'review', 'responsibility', 'authorship')", name=op.f('ck_signatures_meaning')),
    sa.ForeignKeyConstraint(['entry_id'], ['entries.id'], name=op.f('fk_signatures_entry_id_entries')),
    sa.ForeignKeyConstraint(['signer_id'], ['users.id'], name=op.f('fk_signatures_signer_id_users')),
    sa.ForeignKeyConstraint(['site_id'], ['sites.id'], name=op.f('fk_signatures_site_id_sites')),
    sa.ForeignKeyConstraint(['subject_id'], ['subjects.id'], name=op.f('fk_signatures_subject_id_subjects')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_signatures'))
    )
    with op.batch_alter_table('signatures', schema=None) as batch_op:
        batch_op.create_index('ix_signatures_subject', ['subject_id'], unique=False)
        batch_op.create_index('ix_signatures_valid_entry', ['entry_id'], unique=False, sqlite_where=sa.text('invalidated_at IS NULL'), postgresql_where=sa.text('invalidated_at IS NULL'))

    op.create_table('query_messages',
    sa.Column('query_id', sa.Uuid(), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('author_username', sa.String(length=64), nullable=False),
    sa.Column('author_name', sa.String(length=200), nullable=False),
    sa.Column('author_role', sa.String(length=32), nullable=True),
    sa.Column('created_at', edc.models.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('change_id', sa.Uuid(), nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.CheckConstraint("action IN ('open', 'answer', 'close', 'reopen', 'cancel', 'comment')", name=op.f('ck_query_messages_action')),
    sa.ForeignKeyConstraint(['query_id'], ['queries.id'], name=op.f('fk_query_messages_query_id_queries')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_query_messages'))
    )
    with op.batch_alter_table('query_messages', schema=None) as batch_op:
        batch_op.create_index('ix_query_messages_query_created', ['query_id', 'created_at'], unique=False)

    with op.batch_alter_table('entries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('locked_at', edc.models.types.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('locked_by', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('frozen_by_cut', sa.Uuid(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_entries_frozen_by_cut_data_cuts'), 'data_cuts', ['frozen_by_cut'], ['id'])
        batch_op.create_index('ix_entries_form_subject', ['form_id', 'subject_id'], unique=False)

    with op.batch_alter_table('queries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('first_answered_at', edc.models.types.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('closed_by', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('cancelled_at', edc.models.types.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('assignee_role', sa.String(length=16), nullable=False, server_default='site'))
        batch_op.create_index('ix_queries_state_opened', ['state', 'opened_at'], unique=False)

    with op.batch_alter_table('subjects', schema=None) as batch_op:
        batch_op.add_column(sa.Column('locked_at', edc.models.types.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('locked_by', sa.String(length=64), nullable=True))

    if op.get_bind().dialect.name == "postgresql":
        # As in 0003: grant explicitly, whichever role runs this migration.
        for table in NEW_TABLES:
            op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {APP_ROLE}")


def downgrade():
    with op.batch_alter_table('subjects', schema=None) as batch_op:
        batch_op.drop_column('locked_by')
        batch_op.drop_column('locked_at')

    with op.batch_alter_table('queries', schema=None) as batch_op:
        batch_op.drop_index('ix_queries_state_opened')
        batch_op.drop_column('assignee_role')
        batch_op.drop_column('cancelled_at')
        batch_op.drop_column('closed_by')
        batch_op.drop_column('first_answered_at')

    with op.batch_alter_table('entries', schema=None) as batch_op:
        batch_op.drop_index('ix_entries_form_subject')
        batch_op.drop_constraint(batch_op.f('fk_entries_frozen_by_cut_data_cuts'), type_='foreignkey')
        batch_op.drop_column('frozen_by_cut')
        batch_op.drop_column('locked_by')
        batch_op.drop_column('locked_at')

    with op.batch_alter_table('query_messages', schema=None) as batch_op:
        batch_op.drop_index('ix_query_messages_query_created')

    op.drop_table('query_messages')
    with op.batch_alter_table('signatures', schema=None) as batch_op:
        batch_op.drop_index('ix_signatures_valid_entry', sqlite_where=sa.text('invalidated_at IS NULL'), postgresql_where=sa.text('invalidated_at IS NULL'))
        batch_op.drop_index('ix_signatures_subject')

    op.drop_table('signatures')
    with op.batch_alter_table('sdv_marks', schema=None) as batch_op:
        batch_op.drop_index('ix_sdv_marks_site_form')
        batch_op.drop_index('ix_sdv_marks_active_entry', sqlite_where=sa.text('cleared_at IS NULL'), postgresql_where=sa.text('cleared_at IS NULL'))

    op.drop_table('sdv_marks')
    with op.batch_alter_table('data_cut_entries', schema=None) as batch_op:
        batch_op.drop_index('ix_data_cut_entries_subject')

    op.drop_table('data_cut_entries')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_pending_next', sqlite_where=sa.text("status = 'pending'"), postgresql_where=sa.text("status = 'pending'"))

    op.drop_table('outbox')
    op.drop_table('study_locks')
    op.drop_table('data_cuts')
