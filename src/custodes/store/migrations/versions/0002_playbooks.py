"""Durable playbook runs: run ownership and heartbeats, plans, approvals, entity locks, engine controls.

Revision ID: 0002_playbooks
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002_playbooks"
down_revision = "0001"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _run_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("requested_by", sa.String(length=256), nullable=False, server_default="custodes"),
        sa.Column("parent_run_id", sa.String(length=64), nullable=True),
        sa.Column("inputs", JSON, nullable=False, server_default="{}"),
        sa.Column("trigger", JSON, nullable=False, server_default="{}"),
        sa.Column("definition", JSON, nullable=False, server_default="{}"),
        sa.Column("outputs", JSON, nullable=True),
        sa.Column("owner", sa.String(length=128), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resumes", sa.Integer(), nullable=False, server_default="0"),
    ]


def _step_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("attempt", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("target", sa.String(length=512), nullable=True),
        sa.Column("destructive", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("plan", JSON, nullable=True),
        sa.Column("plan_hash", sa.String(length=64), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    ]


def upgrade() -> None:
    for column in _run_columns():
        op.add_column("runs", column)
    for column in _step_columns():
        op.add_column("steps", column)
    op.create_index(op.f("ix_runs_status_heartbeat_at"), "runs", ["status", "heartbeat_at"], unique=False)
    op.create_index(op.f("ix_runs_entity_status"), "runs", ["entity", "status"], unique=False)
    op.create_index(op.f("ix_steps_destructive_started_at"), "steps", ["destructive", "started_at"], unique=False)
    op.create_table(
        "approvals",
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("step_id", sa.String(length=128), nullable=False),
        sa.Column("approver", sa.String(length=256), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("plan_hash", sa.String(length=64), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_approvals_run_id_runs"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", "step_id", "approver", name=op.f("pk_approvals")),
    )
    op.create_table(
        "entity_locks",
        sa.Column("entity", sa.String(length=512), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("entity", name=op.f("pk_entity_locks")),
    )
    op.create_table(
        "controls",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", JSON, nullable=False),
        sa.Column("updated_by", sa.String(length=256), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_controls")),
    )


def downgrade() -> None:
    op.drop_table("controls")
    op.drop_table("entity_locks")
    op.drop_table("approvals")
    op.drop_index(op.f("ix_steps_destructive_started_at"), table_name="steps")
    op.drop_index(op.f("ix_runs_entity_status"), table_name="runs")
    op.drop_index(op.f("ix_runs_status_heartbeat_at"), table_name="runs")
    with op.batch_alter_table("steps") as batch:
        for column in reversed(_step_columns()):
            batch.drop_column(column.name)
    with op.batch_alter_table("runs") as batch:
        for column in reversed(_run_columns()):
            batch.drop_column(column.name)
