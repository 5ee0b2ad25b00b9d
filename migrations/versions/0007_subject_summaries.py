"""subject summaries: per-subject completeness and safety counts the monitoring reports add up;
form-status cells count their SDV marks

Summary rows are written by the app, not here: `flask edc init` (after upgrading) and the worker count
every subject without a row that holds (edc/services/summaries.refresh_outdated); until then the
reports count those subjects afresh.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27

"""
from alembic import op
import sqlalchemy as sa

import edc.models.types


# revision identifiers, used by Alembic.
revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

APP_ROLE = "edc_application"


def upgrade():
    op.create_table('subject_summaries',
    sa.Column('subject_id', sa.Uuid(), nullable=False),
    sa.Column('site_id', sa.Uuid(), nullable=False),
    sa.Column('fingerprint', sa.String(length=16), nullable=False),
    sa.Column('counted_on', sa.Date(), nullable=False),
    sa.Column('valid_until', sa.Date(), nullable=True),
    sa.Column('expected', sa.Integer(), nullable=False),
    sa.Column('complete', sa.Integer(), nullable=False),
    sa.Column('draft', sa.Integer(), nullable=False),
    sa.Column('missing', sa.Integer(), nullable=False),
    sa.Column('overdue', sa.Integer(), nullable=False),
    sa.Column('ae_total', sa.Integer(), nullable=False),
    sa.Column('sae_total', sa.Integer(), nullable=False),
    sa.Column('ae_by_grade', edc.models.types.JSONDocument(), nullable=False),
    sa.Column('sae_by_grade', edc.models.types.JSONDocument(), nullable=False),
    sa.Column('max_crs_grade', sa.Integer(), nullable=True),
    sa.Column('max_icans_grade', sa.Integer(), nullable=True),
    sa.Column('updated_at', edc.models.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['site_id'], ['sites.id'], name=op.f('fk_subject_summaries_site_id_sites')),
    sa.ForeignKeyConstraint(['subject_id'], ['subjects.id'], name=op.f('fk_subject_summaries_subject_id_subjects')),
    sa.PrimaryKeyConstraint('subject_id', name=op.f('pk_subject_summaries'))
    )
    with op.batch_alter_table('subject_summaries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_subject_summaries_site_id'), ['site_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_subject_summaries_valid_until'), ['valid_until'], unique=False)
    with op.batch_alter_table('form_status', schema=None) as batch_op:
        batch_op.add_column(sa.Column('entries_verified', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('items_verified', sa.Integer(), nullable=False, server_default='0'))
    # Each cell's entries with an active whole-entry mark, and its active item marks (as status_table.refresh counts).
    op.execute("""
        UPDATE form_status SET
          entries_verified = (
            SELECT count(*) FROM entries e
            WHERE e.subject_id = form_status.subject_id AND e.event_key = form_status.event_key
              AND e.form_id = form_status.form_id
              AND EXISTS (SELECT 1 FROM sdv_marks m WHERE m.entry_id = e.id AND m.item_id IS NULL AND m.cleared_at IS NULL)),
          items_verified = (
            SELECT count(*) FROM sdv_marks m JOIN entries e ON m.entry_id = e.id
            WHERE e.subject_id = form_status.subject_id AND e.event_key = form_status.event_key
              AND e.form_id = form_status.form_id AND m.item_id IS NOT NULL AND m.cleared_at IS NULL)
        WHERE EXISTS (SELECT 1 FROM sdv_marks m WHERE m.subject_id = form_status.subject_id AND m.form_id = form_status.form_id)
    """)
    if op.get_bind().dialect.name == "postgresql":
        # As in 0003: grant explicitly, whichever role runs this migration.
        op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON subject_summaries TO {APP_ROLE}")


def downgrade():
    with op.batch_alter_table('form_status', schema=None) as batch_op:
        batch_op.drop_column('items_verified')
        batch_op.drop_column('entries_verified')
    with op.batch_alter_table('subject_summaries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_subject_summaries_valid_until'))
        batch_op.drop_index(batch_op.f('ix_subject_summaries_site_id'))

    op.drop_table('subject_summaries')
