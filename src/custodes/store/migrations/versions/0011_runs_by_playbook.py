"""Each playbook's hourly cap on the runs its triggers start: runs are counted by playbook and start time, and owed
starts carry their finding's severity, so the most severe of those a cap held back start first.

Revision ID: 0011_runs_by_playbook
Revises: 0010_findings_last_seen
"""

import sqlalchemy as sa
from alembic import op

revision = "0011_runs_by_playbook"
down_revision = "0010_findings_last_seen"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(op.f("ix_runs_playbook_created_at"), "runs", ["playbook", "created_at"], unique=False)
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("priority", sa.SmallInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("priority")
    op.drop_index(op.f("ix_runs_playbook_created_at"), table_name="runs")
