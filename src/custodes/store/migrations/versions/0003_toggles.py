"""Playbooks and rules enabled or disabled through the API; merges the 0002 branches.

Revision ID: 0003_toggles
Revises: 0002_connector_status, 0002_correlation, 0002_evidence, 0002_hunts, 0002_inventory, 0002_playbooks,
    0002_scoring
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_toggles"
down_revision = (
    "0002_connector_status",
    "0002_correlation",
    "0002_evidence",
    "0002_hunts",
    "0002_inventory",
    "0002_playbooks",
    "0002_scoring",
)
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "toggles",
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("updated_by", sa.String(length=256), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("kind", "name", name=op.f("pk_toggles")),
    )


def downgrade() -> None:
    op.drop_table("toggles")
