"""The outbox: playbook starts written with the findings that trigger them, drained after the commit.

Revision ID: 0004_outbox
Revises: 0003_toggles
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_outbox"
down_revision = "0003_toggles"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("playbook", sa.String(length=256), nullable=False),
        sa.Column("finding_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("playbook", "finding_id", name=op.f("pk_outbox")),
    )
    op.create_index(op.f("ix_outbox_created_at"), "outbox", ["created_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_outbox_created_at"), table_name="outbox")
    op.drop_table("outbox")
