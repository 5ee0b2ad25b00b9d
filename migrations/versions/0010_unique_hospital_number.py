"""one subject per hospital number and site, enforced by the database

Two enrolments of one hospital number at the same moment both passed the duplicate check, which ran before
either had written. A unique index on (site, blind index) makes the second fail whatever the timing; it
replaces the blind index's own index, since every lookup names the site too. The upgrade stops, naming the
study numbers, if a site already holds a hospital number twice: which subject is the real one is for the
site to decide, not for a migration.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

DUPLICATES = sa.text(
    "SELECT s.number FROM subjects s JOIN (SELECT site_id, duplicate_index FROM subjects "
    "WHERE duplicate_index IS NOT NULL GROUP BY site_id, duplicate_index HAVING count(*) > 1) d "
    "ON d.site_id = s.site_id AND d.duplicate_index = s.duplicate_index ORDER BY s.number"
)


def upgrade():
    duplicates = [row[0] for row in op.get_bind().execute(DUPLICATES)]
    if duplicates:
        raise RuntimeError("These subjects share a hospital number with another subject of their site: "
                           f"{', '.join(duplicates)}. Resolve them (withdraw the duplicate registration) and "
                           "run the upgrade again.")
    with op.batch_alter_table('subjects', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_subjects_duplicate_index'))
        batch_op.create_index('uq_subjects_site_duplicate_index', ['site_id', 'duplicate_index'], unique=True)


def downgrade():
    with op.batch_alter_table('subjects', schema=None) as batch_op:
        batch_op.drop_index('uq_subjects_site_duplicate_index')
        batch_op.create_index(batch_op.f('ix_subjects_duplicate_index'), ['duplicate_index'], unique=False)
