"""A cluster's shared state: each partition's correlation state with the deliveries it covers, the detection
workers alive, and leases on outbox rows a runner has claimed.

Revision ID: 0007_cluster
Revises: 0006_outbox_webhook
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007_cluster"
down_revision = "0006_outbox_webhook"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "cluster_partitions",
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("deliveries", sa.BigInteger(), nullable=False),
        sa.Column("last_message", sa.String(length=64), nullable=True),
        sa.Column("worker", sa.String(length=128), nullable=True),
        sa.Column("state", JSON, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_cluster_partitions")),
    )
    op.create_table(
        "cluster_workers",
        sa.Column("exchange", sa.String(length=200), nullable=False),
        sa.Column("worker", sa.String(length=128), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("exchange", "worker", name=op.f("pk_cluster_workers")),
    )
    op.add_column("outbox", sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("claimed_until")
    op.drop_table("cluster_workers")
    op.drop_table("cluster_partitions")
