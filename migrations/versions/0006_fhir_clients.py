"""fhir clients: registry clients of the FHIR API (SMART Backend Services), their spent assertions, their sessions

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27

"""
from alembic import op
import sqlalchemy as sa

import edc.models.types


# revision identifiers, used by Alembic.
revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

APP_ROLE = "edc_application"
NEW_TABLES = ("fhir_clients", "fhir_client_assertions")


def upgrade():
    op.create_table('fhir_clients',
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('jwks', edc.models.types.JSONDocument(), nullable=False),
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', edc.models.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('deactivated_at', edc.models.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('deactivated_by', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_fhir_clients_user_id_users')),
    sa.PrimaryKeyConstraint('client_id', name=op.f('pk_fhir_clients'))
    )
    with op.batch_alter_table('fhir_clients', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_fhir_clients_user_id'), ['user_id'], unique=False)

    op.create_table('fhir_client_assertions',
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('jti', sa.String(length=255), nullable=False),
    sa.Column('expires_at', edc.models.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.ForeignKeyConstraint(['client_id'], ['fhir_clients.client_id'], name=op.f('fk_fhir_client_assertions_client_id_fhir_clients')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_fhir_client_assertions')),
    sa.UniqueConstraint('client_id', 'jti', name=op.f('uq_fhir_client_assertions_client_id_jti'))
    )

    if op.get_bind().dialect.name == "sqlite":
        # SQLite adds no constraint to an existing table, and a batch copy would DROP auth_sessions, which
        # refresh_tokens rows reference (foreign keys are on): declare the reference with the new column.
        op.add_column('auth_sessions', sa.Column('client_id', sa.String(length=64),
                                                 sa.ForeignKey('fhir_clients.client_id'), nullable=True),
                      inline_references=True)
    else:
        op.add_column('auth_sessions', sa.Column('client_id', sa.String(length=64), nullable=True))
        op.create_foreign_key(op.f('fk_auth_sessions_client_id_fhir_clients'), 'auth_sessions', 'fhir_clients',
                              ['client_id'], ['client_id'])
    op.add_column('auth_sessions', sa.Column('scope', sa.String(length=1000), nullable=True))
    op.create_index(op.f('ix_auth_sessions_client_id'), 'auth_sessions', ['client_id'], unique=False)

    if op.get_bind().dialect.name == "postgresql":
        # As in 0003: grant explicitly, whichever role runs this migration.
        for table in NEW_TABLES:
            op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {APP_ROLE}")


def downgrade():
    with op.batch_alter_table('auth_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_auth_sessions_client_id'))
        batch_op.drop_constraint(batch_op.f('fk_auth_sessions_client_id_fhir_clients'), type_='foreignkey')
        batch_op.drop_column('scope')
        batch_op.drop_column('client_id')

    op.drop_table('fhir_client_assertions')
    with op.batch_alter_table('fhir_clients', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_fhir_clients_user_id'))

    op.drop_table('fhir_clients')
