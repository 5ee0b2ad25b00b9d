"""safety clocks: the 24-hour SAE and 7/15-day SUSAR reporting deadlines

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27

One row per adverse-event entry and clock family (sae, susar); the partial indexes cover the
open clocks by site and due time, which listings, reminders and reports read.

"""
from alembic import op
import sqlalchemy as sa

import edc.models.types


# revision identifiers, used by Alembic.
revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

APP_ROLE = "edc_application"
OPEN = sa.text("stopped_at IS NULL")


def upgrade():
    op.create_table('safety_clocks',
    sa.Column('subject_id', sa.Uuid(), nullable=False),
    sa.Column('site_id', sa.Uuid(), nullable=False),
    sa.Column('ae_entry_id', sa.Uuid(), nullable=False),
    sa.Column('family', sa.String(length=8), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('started_at', edc.models.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('due_at', edc.models.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('stopped_at', edc.models.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('stop_reason', sa.String(length=16), nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', edc.models.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', edc.models.types.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("kind IN ('sae_initial', 'susar_7d', 'susar_15d')", name=op.f('ck_safety_clocks_kind')),
    sa.CheckConstraint("(family = 'sae' AND kind = 'sae_initial') OR (family = 'susar' AND kind IN ('susar_7d', 'susar_15d'))",
                       name=op.f('ck_safety_clocks_kind_family')),
    sa.CheckConstraint("stop_reason IS NULL OR stop_reason IN ('complete', 'submitted', 'not_serious', 'not_susar')",
                       name=op.f('ck_safety_clocks_stop_reason')),
    sa.CheckConstraint('(stopped_at IS NULL) = (stop_reason IS NULL)', name=op.f('ck_safety_clocks_stopped_with_reason')),
    sa.ForeignKeyConstraint(['ae_entry_id'], ['entries.id'], name=op.f('fk_safety_clocks_ae_entry_id_entries')),
    sa.ForeignKeyConstraint(['site_id'], ['sites.id'], name=op.f('fk_safety_clocks_site_id_sites')),
    sa.ForeignKeyConstraint(['subject_id'], ['subjects.id'], name=op.f('fk_safety_clocks_subject_id_subjects')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_safety_clocks')),
    sa.UniqueConstraint('ae_entry_id', 'family', name=op.f('uq_safety_clocks_ae_entry_id_family'))
    )
    with op.batch_alter_table('safety_clocks', schema=None) as batch_op:
        batch_op.create_index('ix_safety_clocks_open_due', ['due_at'], unique=False, sqlite_where=OPEN, postgresql_where=OPEN)
        batch_op.create_index('ix_safety_clocks_open_site_due', ['site_id', 'due_at'], unique=False,
                              sqlite_where=OPEN, postgresql_where=OPEN)
        batch_op.create_index('ix_safety_clocks_subject_id', ['subject_id'], unique=False)

    if op.get_bind().dialect.name == "postgresql":
        # 0001's default privileges cover tables created by the role that ran it; grant explicitly
        # so the service role can use the table whichever role runs this migration.
        op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON safety_clocks TO {APP_ROLE}")


def downgrade():
    with op.batch_alter_table('safety_clocks', schema=None) as batch_op:
        batch_op.drop_index('ix_safety_clocks_subject_id')
        batch_op.drop_index('ix_safety_clocks_open_site_due', sqlite_where=OPEN, postgresql_where=OPEN)
        batch_op.drop_index('ix_safety_clocks_open_due', sqlite_where=OPEN, postgresql_where=OPEN)

    op.drop_table('safety_clocks')
