"""Evidence bundles and case notes.

Revision ID: 0002_evidence
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002_evidence"
down_revision = "0001"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "evidence_bundles",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("entity", sa.String(length=512), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("location", sa.String(length=1024), nullable=False),
        sa.Column("manifest_sha256", sa.String(length=64), nullable=False),
        sa.Column("files", JSON, nullable=False),
        sa.Column("created_by", sa.String(length=256), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evidence_bundles")),
    )
    op.create_index(
        op.f("ix_evidence_bundles_entity_created_at"), "evidence_bundles", ["entity", "created_at"], unique=False
    )
    op.create_table(
        "case_notes",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("case_id", sa.String(length=512), nullable=False),
        sa.Column("author", sa.String(length=256), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_case_notes")),
    )
    op.create_index(op.f("ix_case_notes_case_id_created_at"), "case_notes", ["case_id", "created_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_case_notes_case_id_created_at"), table_name="case_notes")
    op.drop_table("case_notes")
    op.drop_index(op.f("ix_evidence_bundles_entity_created_at"), table_name="evidence_bundles")
    op.drop_table("evidence_bundles")
