"""Behaviour scoring: per-entity baselines, explained day scores, engine metadata.

Revision ID: 0002_scoring
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002_scoring"
down_revision = "0001"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "scoring_state",
        sa.Column("entity", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("state", JSON, nullable=False),
        sa.Column("bytes", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("entity", name=op.f("pk_scoring_state")),
    )
    op.create_table(
        "scoring_scores",
        sa.Column("entity", sa.String(length=128), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("risk", sa.Float(), nullable=False),
        sa.Column("points", sa.Float(), nullable=False),
        sa.Column("detail", JSON, nullable=False),
        sa.Column("event_ids", JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("entity", "day", name=op.f("pk_scoring_scores")),
    )
    op.create_index(op.f("ix_scoring_scores_day_risk"), "scoring_scores", ["day", "risk"], unique=False)
    op.create_table(
        "scoring_meta",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", JSON, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_scoring_meta")),
    )


def downgrade() -> None:
    op.drop_table("scoring_meta")
    op.drop_index(op.f("ix_scoring_scores_day_risk"), table_name="scoring_scores")
    op.drop_table("scoring_scores")
    op.drop_table("scoring_state")
