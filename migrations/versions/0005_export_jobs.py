"""export jobs: CSV, ODM and FHIR exports asked over the API, run by the worker

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27

"""
from alembic import op
import sqlalchemy as sa

import edc.models.types


# revision identifiers, used by Alembic.
revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

APP_ROLE = "edc_application"


def upgrade():
    op.create_table('export_jobs',
    sa.Column('format', sa.String(length=8), nullable=False),
    sa.Column('bulk', sa.Boolean(), nullable=False),
    sa.Column('parameters', edc.models.types.JSONDocument(), nullable=False),
    sa.Column('site_ids', edc.models.types.JSONDocument(), nullable=True),
    sa.Column('requested_by_id', sa.Uuid(), nullable=False),
    sa.Column('requested_by', sa.String(length=64), nullable=False),
    sa.Column('requested_role', sa.String(length=32), nullable=False),
    sa.Column('requested_at', edc.models.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('started_at', edc.models.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('heartbeat_at', edc.models.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('finished_at', edc.models.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('subjects_total', sa.Integer(), nullable=True),
    sa.Column('subjects_done', sa.Integer(), nullable=False),
    sa.Column('manifest', edc.models.types.JSONDocument(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('deleted_at', edc.models.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.CheckConstraint("format IN ('csv', 'odm', 'fhir')", name=op.f('ck_export_jobs_format')),
    sa.CheckConstraint("state IN ('queued', 'running', 'completed', 'failed', 'cancelled')", name=op.f('ck_export_jobs_state')),
    sa.ForeignKeyConstraint(['requested_by_id'], ['users.id'], name=op.f('fk_export_jobs_requested_by_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_export_jobs'))
    )
    with op.batch_alter_table('export_jobs', schema=None) as batch_op:
        batch_op.create_index('ix_export_jobs_active', ['state', 'requested_at'], unique=False, sqlite_where=sa.text("state IN ('queued', 'running')"), postgresql_where=sa.text("state IN ('queued', 'running')"))
        batch_op.create_index('ix_export_jobs_requester', ['requested_by_id', 'state'], unique=False)

    if op.get_bind().dialect.name == "postgresql":
        # As in 0003: grant explicitly, whichever role runs this migration.
        op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON export_jobs TO {APP_ROLE}")


def downgrade():
    with op.batch_alter_table('export_jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_export_jobs_requester')
        batch_op.drop_index('ix_export_jobs_active', sqlite_where=sa.text("state IN ('queued', 'running')"), postgresql_where=sa.text("state IN ('queued', 'running')"))

    op.drop_table('export_jobs')
