"""account mail and registry accounts: setup links are mailed through the outbox, sealed; registry
client accounts keep no password

Outbox records gain a recipient and a sealed secret (an account mail's setup token, an AES-GCM envelope
bound to its row that only the mailer opens) and the kinds account_setup and password_reset. Accounts
holding the registry role lose any password, setup token and password session they had: they sign in
with their client's keys only.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06

"""
from alembic import op
import sqlalchemy as sa

import edc.models.types


# revision identifiers, used by Alembic.
revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

NOTIFICATION_KINDS = "('sae_new', 'critical_query', 'safety_clock_due')"
OUTBOX_KINDS = "('sae_new', 'critical_query', 'safety_clock_due', 'account_setup', 'password_reset')"
REGISTRY_ACCOUNTS = "SELECT user_id FROM role_assignments WHERE role = 'registry' AND revoked_at IS NULL"


def upgrade():
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('recipient', sa.String(length=254), nullable=True))
        batch_op.add_column(sa.Column('sealed_secret', edc.models.types.JSONDocument(), nullable=True))
        batch_op.drop_constraint(batch_op.f('ck_outbox_kind'), type_='check')
        batch_op.create_check_constraint(batch_op.f('ck_outbox_kind'), sa.text(f"kind IN {OUTBOX_KINDS}"))
    op.execute(f"UPDATE users SET password_hash = NULL, setup_token_hash = NULL, setup_token_expires_at = NULL "
               f"WHERE id IN ({REGISTRY_ACCOUNTS})")
    op.execute(f"UPDATE auth_sessions SET revoked_at = CURRENT_TIMESTAMP, revoked_reason = 'registry_password_session' "
               f"WHERE client_id IS NULL AND revoked_at IS NULL AND user_id IN ({REGISTRY_ACCOUNTS})")


def downgrade():
    op.execute(f"DELETE FROM outbox WHERE kind NOT IN {NOTIFICATION_KINDS}")
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('ck_outbox_kind'), type_='check')
        batch_op.create_check_constraint(batch_op.f('ck_outbox_kind'), sa.text(f"kind IN {NOTIFICATION_KINDS}"))
        batch_op.drop_column('sealed_secret')
        batch_op.drop_column('recipient')
