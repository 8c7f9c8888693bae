"""Per-connector status: events/s, newest event (lag), last error, consecutive failures.

Revision ID: 0002_connector_status
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_connector_status"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "connector_status",
        sa.Column("connector", sa.String(length=256), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("events_total", sa.BigInteger(), nullable=False),
        sa.Column("last_round_events", sa.Integer(), nullable=False),
        sa.Column("events_per_second", sa.Float(), nullable=False),
        sa.Column("newest_event", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_success", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("connector", name=op.f("pk_connector_status")),
    )


def downgrade() -> None:
    op.drop_table("connector_status")
