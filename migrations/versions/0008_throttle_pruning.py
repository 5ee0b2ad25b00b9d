"""login throttle pruning: index login_throttles by the last failure, so forgotten counters are deleted cheaply

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    op.create_index('ix_login_throttles_last_failure_at', 'login_throttles', ['last_failure_at'], unique=False)


def downgrade():
    op.drop_index('ix_login_throttles_last_failure_at', table_name='login_throttles')
