"""Findings are read back by (last seen, id) when a restart restores the events held for them.

Revision ID: 0010_findings_last_seen
Revises: 0009_review_place
"""

from alembic import op

revision = "0010_findings_last_seen"
down_revision = "0009_review_place"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(op.f("ix_findings_last_seen_id"), "findings", ["last_seen", "id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_findings_last_seen_id"), table_name="findings")
