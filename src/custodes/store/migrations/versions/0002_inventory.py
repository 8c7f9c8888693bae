"""Identity inventory: accounts per source (Entra, Okta, AWS IAM) and their grants (groups, roles, policies, keys).

Revision ID: 0002_inventory
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002_inventory"
down_revision = "0001"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "identity_accounts",
        sa.Column("id", sa.String(length=768), nullable=False),
        sa.Column("connector", sa.String(length=256), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("native_id", sa.String(length=512), nullable=False),
        sa.Column("entity", sa.String(length=512), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("login", sa.String(length=512), nullable=True),
        sa.Column("display_name", sa.String(length=512), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_sign_in", sa.DateTime(timezone=True), nullable=True),
        sa.Column("mfa", sa.Boolean(), nullable=True),
        sa.Column("attributes", JSON, nullable=False),
        sa.Column("warnings", JSON, nullable=False),
        sa.Column("collected_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identity_accounts")),
    )
    op.create_index(op.f("ix_identity_accounts_connector"), "identity_accounts", ["connector"], unique=False)
    op.create_index(op.f("ix_identity_accounts_entity"), "identity_accounts", ["entity"], unique=False)
    op.create_table(
        "identity_grants",
        sa.Column("account_id", sa.String(length=768), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("privileged", sa.Boolean(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attributes", JSON, nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["identity_accounts.id"],
            name=op.f("fk_identity_grants_account_id_identity_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", "kind", "name", name=op.f("pk_identity_grants")),
    )


def downgrade() -> None:
    op.drop_table("identity_grants")
    op.drop_index(op.f("ix_identity_accounts_entity"), table_name="identity_accounts")
    op.drop_index(op.f("ix_identity_accounts_connector"), table_name="identity_accounts")
    op.drop_table("identity_accounts")
