"""Merges the 0004 branches (the outbox and the pseudonym index); no schema change of its own.

Revision ID: 0005_merge
Revises: 0004_outbox, 0004_pseudonyms
"""

revision = "0005_merge"
down_revision = ("0004_outbox", "0004_pseudonyms")
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing to change: the branches touch different tables."""


def downgrade() -> None:
    """Nothing to change."""
