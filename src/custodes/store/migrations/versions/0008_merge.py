"""Merges the 0007 branches (the cluster's partition state and cases); no schema change of its own.

Revision ID: 0008_merge
Revises: 0007_cluster, 0007_cases
"""

revision = "0008_merge"
down_revision = ("0007_cluster", "0007_cases")
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing to change: the branches touch different tables."""


def downgrade() -> None:
    """Nothing to change."""
