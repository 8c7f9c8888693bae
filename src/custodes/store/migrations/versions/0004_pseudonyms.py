"""Each entity's pseudonym stored beside it (indexed), so that a pseudonym is looked up, not recomputed for every
entity.

Revision ID: 0004_pseudonyms
Revises: 0003_toggles
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_pseudonyms"
down_revision = "0003_toggles"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("entities") as batch:
        batch.add_column(sa.Column("pseudonym", sa.String(length=32), nullable=True))
        batch.create_index(batch.f("ix_entities_pseudonym"), ["pseudonym"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("entities") as batch:
        batch.drop_index(batch.f("ix_entities_pseudonym"))
        batch.drop_column("pseudonym")
