"""idempotency keys: a POST's answer kept 24 h under its Idempotency-Key, so a retry returns it

Revision ID: 0011
Revises: 0009
Create Date: 2026-12-06

"""
from alembic import op
import sqlalchemy as sa

import edc.models.types


# revision identifiers, used by Alembic.
revision = '0011'
down_revision = '0009'
branch_labels = None
depends_on = None

APP_ROLE = "edc_application"


def upgrade():
    op.create_table('idempotent_requests',
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('request_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', edc.models.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('status', sa.Integer(), nullable=True),
    sa.Column('response', edc.models.types.JSONDocument(), nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_idempotent_requests_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_idempotent_requests')),
    sa.UniqueConstraint('user_id', 'key', name=op.f('uq_idempotent_requests_user_id_key'))
    )
    with op.batch_alter_table('idempotent_requests', schema=None) as batch_op:
        batch_op.create_index('ix_idempotent_requests_created_at', ['created_at'], unique=False)

    if op.get_bind().dialect.name == "postgresql":
        # As in 0003: grant explicitly, whichever role runs this migration.
        op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON idempotent_requests TO {APP_ROLE}")


def downgrade():
    with op.batch_alter_table('idempotent_requests', schema=None) as batch_op:
        batch_op.drop_index('ix_idempotent_requests_created_at')

    op.drop_table('idempotent_requests')
