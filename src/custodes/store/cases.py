"""The store's case tables: investigations grouping findings, runs, evidence and scores about one subject.

Defined on the store's one `metadata` (custodes.store.tables imports this module), created by migration
`0007_cases`.
"""

from __future__ import annotations

import sqlalchemy as sa

from custodes.store.tables import JSON, Timestamp, metadata

CASE_STATUSES = ("new", "triage", "investigating", "escalated_hr", "escalated_legal", "closed")
"""A case's statuses, in the order an investigation usually walks them."""

DISPOSITIONS = ("malicious", "negligent", "compromised", "benign")
"""How a closed case was decided."""

MEMBER_KINDS = ("finding", "run", "evidence", "score")
"""What a case groups: a finding id, a playbook run id, an evidence bundle id, or a score (`entity@day`)."""

PRIORITIES = ("low", "medium", "high", "critical")
"""A case's priority; the SLA in custodes.yaml maps each to a time to triage."""

cases = sa.Table(
    "cases",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("subject", sa.String(512)),
    sa.Column("title", sa.String(512), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("disposition", sa.String(32)),
    sa.Column("assignee", sa.String(256)),
    sa.Column("priority", sa.String(16), nullable=False),
    sa.Column("due_at", Timestamp),
    sa.Column("opened_by", sa.String(256), nullable=False),
    sa.Column("opened_at", Timestamp, nullable=False),
    sa.Column("first_triaged_at", Timestamp),
    sa.Column("closed_at", Timestamp),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.Column("restricted", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("legal_hold", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index(None, "status", "opened_at"),
    sa.Index(None, "subject", "status"),
    sa.Index(None, "opened_at"),
)

case_members = sa.Table(
    "case_members",
    metadata,
    sa.Column("case_id", sa.String(64), sa.ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("ref", sa.String(512), primary_key=True),
    sa.Column("added_by", sa.String(256), nullable=False),
    sa.Column("added_at", Timestamp, nullable=False),
    sa.Index(None, "kind", "ref"),
)

case_events = sa.Table(
    "case_events",
    metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("case_id", sa.String(64), sa.ForeignKey("cases.id", ondelete="CASCADE"), nullable=False),
    sa.Column("at", Timestamp, nullable=False),
    sa.Column("actor", sa.String(256), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("details", JSON, nullable=False),
    sa.Index(None, "case_id", "seq"),
)
"""A case's timeline: opened, status, assignee, priority, member linked/unlinked, access, hold, closed."""

case_comments = sa.Table(
    "case_comments",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("case_id", sa.String(64), sa.ForeignKey("cases.id", ondelete="CASCADE"), nullable=False),
    sa.Column("author", sa.String(256), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Index(None, "case_id", "created_at"),
)

case_access = sa.Table(
    "case_access",
    metadata,
    sa.Column("case_id", sa.String(64), sa.ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("principal", sa.String(256), primary_key=True),
    sa.Column("granted_by", sa.String(256), nullable=False),
    sa.Column("granted_at", Timestamp, nullable=False),
    sa.Index(None, "principal"),
)
"""Need to know: while a case is restricted, only these principals (token or user names) see it."""

feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("entity", sa.String(512), nullable=False),
    sa.Column("pattern_kind", sa.String(16), nullable=False),
    sa.Column("pattern", sa.String(256), nullable=False),
    sa.Column("scope", sa.String(16), nullable=False, server_default="person"),
    sa.Column("scope_name", sa.String(512)),
    sa.Column("verdict", sa.String(32), nullable=False),
    sa.Column("effect", sa.String(16), nullable=False),
    sa.Column("weight", sa.Float, nullable=False, server_default="0"),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("case_id", sa.String(64)),
    sa.Column("finding_id", sa.String(64)),
    sa.Column("created_by", sa.String(256), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("revoked_by", sa.String(256)),
    sa.Column("revoked_at", Timestamp),
    sa.Index(None, "entity", "pattern_kind", "pattern"),
    sa.Index(None, "case_id"),
)
"""Analyst feedback: a verdict on a pattern (`rule` id or scoring `cause`) for one entity (`scope` person) or, on a
cause, for the entity's peer group or department (`scope` peers or department, named by `scope_name`), suppressing
it (`effect` suppress) or scaling it by `weight` (`effect` downweight) until revoked."""
