"""data key state: the data key every node encrypts new values under

`flask edc keys rotate` records it here before it re-encrypts, so a node whose key ring lacks that key (or
still encrypts under an older one) rereads its key directory before it writes. No row: the newest key of
the ring, as before.

Revision ID: 0014
Revises: 0011
Create Date: 2026-12-06

"""
from alembic import op
import sqlalchemy as sa

import edc.models.types


# revision identifiers, used by Alembic.
revision = '0014'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'data_key_state',
        sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('current_key_id', sa.Integer(), nullable=False),
        sa.Column('recorded_at', edc.models.types.UTCDateTime(), nullable=False),
        sa.CheckConstraint('id = 1', name=op.f('ck_data_key_state_one_row')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_data_key_state')),
    )


def downgrade():
    op.drop_table('data_key_state')
