"""Runs are counted by playbook and start time, for each playbook's cap on the runs its triggers start an hour.

Revision ID: 0011_runs_by_playbook
Revises: 0010_findings_last_seen
"""

from alembic import op

revision = "0011_runs_by_playbook"
down_revision = "0010_findings_last_seen"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(op.f("ix_runs_playbook_created_at"), "runs", ["playbook", "created_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_runs_playbook_created_at"), table_name="runs")
