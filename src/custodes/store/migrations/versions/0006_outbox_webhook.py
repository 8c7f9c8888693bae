"""Webhook-triggered playbook starts ride the outbox: a row with a receiver is owed for a record, not a finding.

Revision ID: 0006_outbox_webhook
Revises: 0005_merge
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_outbox_webhook"
down_revision = "0005_merge"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("outbox", sa.Column("receiver", sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("receiver")
