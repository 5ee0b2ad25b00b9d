"""site archives: an export job may be a site archive at study close (casebook PDFs, CSV, ODM, manifest)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def _formats(formats: str) -> None:
    with op.batch_alter_table('export_jobs', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_export_jobs_format'), type_='check')
        batch_op.create_check_constraint(op.f('ck_export_jobs_format'), f"format IN {formats}")


def upgrade():
    _formats("('csv', 'odm', 'fhir', 'archive')")


def downgrade():
    op.execute("DELETE FROM export_jobs WHERE format = 'archive'")
    _formats("('csv', 'odm', 'fhir')")
