"""Hunt runs: one row per run of a scheduled or ad-hoc hunt; a scheduled slot is claimed by (hunt, slot).

Revision ID: 0002_hunts
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002_hunts"
down_revision = "0001"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "hunt_runs",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("hunt", sa.String(length=256), nullable=False),
        sa.Column("slot", sa.DateTime(timezone=True), nullable=True),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("pushed_down", JSON, nullable=False),
        sa.Column("in_process", JSON, nullable=False),
        sa.Column("events_scanned", sa.BigInteger(), nullable=False),
        sa.Column("findings", JSON, nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("worker", sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hunt_runs")),
        sa.UniqueConstraint("hunt", "slot", name=op.f("uq_hunt_runs_hunt_slot")),
    )
    op.create_index(op.f("ix_hunt_runs_hunt_started_at"), "hunt_runs", ["hunt", "started_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_hunt_runs_hunt_started_at"), table_name="hunt_runs")
    op.drop_table("hunt_runs")
