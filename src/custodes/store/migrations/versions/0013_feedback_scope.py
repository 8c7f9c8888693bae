"""Feedback on a scoring cause can cover a person's peer group or department, not only the person.

Revision ID: 0013_feedback_scope
Revises: 0012_staged_scores
"""

import sqlalchemy as sa
from alembic import op

revision = "0013_feedback_scope"
down_revision = "0012_staged_scores"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("feedback") as batch:
        batch.add_column(sa.Column("scope", sa.String(length=16), server_default="person", nullable=False))
        batch.add_column(sa.Column("scope_name", sa.String(length=512), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("feedback") as batch:
        batch.drop_column("scope_name")
        batch.drop_column("scope")
