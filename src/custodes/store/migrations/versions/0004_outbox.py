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
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("playbook", sa.String(length=256), nullable=False),
        sa.Column("finding_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_outbox")),
        sa.UniqueConstraint("playbook", "finding_id", name=op.f("uq_outbox_playbook_finding_id")),
    )


def downgrade() -> None:
    op.drop_table("outbox")
