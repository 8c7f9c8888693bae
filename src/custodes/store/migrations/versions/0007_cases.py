"""Cases: investigations grouping findings, runs, evidence and scores, with a timeline, comments, need-to-know access
and analyst feedback.

Revision ID: 0007_cases
Revises: 0006_outbox_webhook
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007_cases"
down_revision = "0006_outbox_webhook"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Timestamp = sa.DateTime(timezone=True)
Seq = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "cases",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=512), nullable=True),
        sa.Column("title", sa.String(length=512), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("disposition", sa.String(length=32), nullable=True),
        sa.Column("assignee", sa.String(length=256), nullable=True),
        sa.Column("priority", sa.String(length=16), nullable=False),
        sa.Column("due_at", Timestamp, nullable=True),
        sa.Column("opened_by", sa.String(length=256), nullable=False),
        sa.Column("opened_at", Timestamp, nullable=False),
        sa.Column("first_triaged_at", Timestamp, nullable=True),
        sa.Column("closed_at", Timestamp, nullable=True),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.Column("restricted", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("legal_hold", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cases")),
    )
    op.create_index(op.f("ix_cases_status_opened_at"), "cases", ["status", "opened_at"], unique=False)
    op.create_index(op.f("ix_cases_subject_status"), "cases", ["subject", "status"], unique=False)
    op.create_index(op.f("ix_cases_opened_at"), "cases", ["opened_at"], unique=False)
    op.create_table(
        "case_members",
        sa.Column("case_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("ref", sa.String(length=512), nullable=False),
        sa.Column("added_by", sa.String(length=256), nullable=False),
        sa.Column("added_at", Timestamp, nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.id"], name=op.f("fk_case_members_case_id_cases"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("case_id", "kind", "ref", name=op.f("pk_case_members")),
    )
    op.create_index(op.f("ix_case_members_kind_ref"), "case_members", ["kind", "ref"], unique=False)
    op.create_table(
        "case_events",
        sa.Column("seq", Seq, autoincrement=True, nullable=False),
        sa.Column("case_id", sa.String(length=64), nullable=False),
        sa.Column("at", Timestamp, nullable=False),
        sa.Column("actor", sa.String(length=256), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("details", JSON, nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.id"], name=op.f("fk_case_events_case_id_cases"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_case_events")),
    )
    op.create_index(op.f("ix_case_events_case_id_seq"), "case_events", ["case_id", "seq"], unique=False)
    op.create_table(
        "case_comments",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("case_id", sa.String(length=64), nullable=False),
        sa.Column("author", sa.String(length=256), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.id"], name=op.f("fk_case_comments_case_id_cases"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_case_comments")),
    )
    op.create_index(
        op.f("ix_case_comments_case_id_created_at"), "case_comments", ["case_id", "created_at"], unique=False
    )
    op.create_table(
        "case_access",
        sa.Column("case_id", sa.String(length=64), nullable=False),
        sa.Column("principal", sa.String(length=256), nullable=False),
        sa.Column("granted_by", sa.String(length=256), nullable=False),
        sa.Column("granted_at", Timestamp, nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.id"], name=op.f("fk_case_access_case_id_cases"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("case_id", "principal", name=op.f("pk_case_access")),
    )
    op.create_index(op.f("ix_case_access_principal"), "case_access", ["principal"], unique=False)
    op.create_table(
        "feedback",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("entity", sa.String(length=512), nullable=False),
        sa.Column("pattern_kind", sa.String(length=16), nullable=False),
        sa.Column("pattern", sa.String(length=256), nullable=False),
        sa.Column("verdict", sa.String(length=32), nullable=False),
        sa.Column("effect", sa.String(length=16), nullable=False),
        sa.Column("weight", sa.Float(), server_default="0", nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("case_id", sa.String(length=64), nullable=True),
        sa.Column("finding_id", sa.String(length=64), nullable=True),
        sa.Column("created_by", sa.String(length=256), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("revoked_by", sa.String(length=256), nullable=True),
        sa.Column("revoked_at", Timestamp, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feedback")),
    )
    op.create_index(
        op.f("ix_feedback_entity_pattern_kind_pattern"), "feedback", ["entity", "pattern_kind", "pattern"], unique=False
    )
    op.create_index(op.f("ix_feedback_case_id"), "feedback", ["case_id"], unique=False)


def downgrade() -> None:
    for table in ("feedback", "case_access", "case_comments", "case_events", "case_members", "cases"):
        op.drop_table(table)
