"""Day scores keep their place in the closed day's review order, the order the console lists a day in.

Revision ID: 0009_review_place
Revises: 0008_merge
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_review_place"
down_revision = "0008_merge"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("scoring_scores", sa.Column("place", sa.Integer(), nullable=True))
    op.create_index(op.f("ix_scoring_scores_day_place"), "scoring_scores", ["day", "place"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_scoring_scores_day_place"), table_name="scoring_scores")
    with op.batch_alter_table("scoring_scores") as batch:
        batch.drop_column("place")
