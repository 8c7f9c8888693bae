"""Sigma correlation state: the kept events of each group, and each correlation's event-time clock.

Revision ID: 0002_correlation
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002_correlation"
down_revision = "0001"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "correlation_groups",
        sa.Column("correlation_id", sa.String(length=128), nullable=False),
        sa.Column("group_key", sa.String(length=64), nullable=False),
        sa.Column("state", JSON, nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("correlation_id", "group_key", name=op.f("pk_correlation_groups")),
    )
    op.create_table(
        "correlation_clocks",
        sa.Column("correlation_id", sa.String(length=128), nullable=False),
        sa.Column("clock", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("correlation_id", name=op.f("pk_correlation_clocks")),
    )


def downgrade() -> None:
    op.drop_table("correlation_clocks")
    op.drop_table("correlation_groups")
