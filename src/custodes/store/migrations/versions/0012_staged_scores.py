"""A re-score stages its day scores as it makes them, so that its memory does not grow with the history re-scored.

Revision ID: 0012_staged_scores
Revises: 0011_runs_by_playbook
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0012_staged_scores"
down_revision = "0011_runs_by_playbook"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "scoring_scores_staged",
        sa.Column("run", sa.String(length=32), nullable=False),
        sa.Column("entity", sa.String(length=128), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("risk", sa.Float(), nullable=False),
        sa.Column("points", sa.Float(), nullable=False),
        sa.Column("place", sa.Integer(), nullable=True),
        sa.Column("detail", JSON, nullable=False),
        sa.Column("event_ids", JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("run", "entity", "day", name=op.f("pk_scoring_scores_staged")),
    )


def downgrade() -> None:
    op.drop_table("scoring_scores_staged")
