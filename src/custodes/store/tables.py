"""The store's schema in SQLAlchemy Core. Alembic migrations under `migrations/` create exactly this."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from custodes.widths import ENTITY, EVENT_TEXT, LOGSOURCE_TEXT, RULE_ID, TITLE

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Timestamp = sa.DateTime(timezone=True)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("time", Timestamp, nullable=False),
    sa.Column("source", sa.String(128), nullable=False),
    sa.Column("product", sa.String(LOGSOURCE_TEXT["product"])),
    sa.Column("service", sa.String(LOGSOURCE_TEXT["service"])),
    sa.Column("category", sa.String(LOGSOURCE_TEXT["category"])),
    sa.Column("actor", sa.String(EVENT_TEXT["actor"])),
    sa.Column("action", sa.String(EVENT_TEXT["action"])),
    sa.Column("target", sa.String(EVENT_TEXT["target"])),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("src_ip", sa.String(EVENT_TEXT["src_ip"])),
    sa.Column("bytes", sa.BigInteger),
    sa.Column("raw", JSON, nullable=False),
    sa.Column("warnings", JSON, nullable=False),
    sa.Column("ingested_at", Timestamp, nullable=False),
    sa.Index(None, "time"),
    sa.Index(None, "actor", "time"),
)

entities = sa.Table(
    "entities",
    metadata,
    sa.Column("id", sa.String(512), primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("display_name", sa.String(512)),
    sa.Column("attributes", JSON, nullable=False),
    sa.Column("first_seen", Timestamp, nullable=False),
    sa.Column("last_seen", Timestamp, nullable=False),
    sa.Column("pseudonym", sa.String(32)),
    sa.Index(None, "pseudonym"),
)

findings = sa.Table(
    "findings",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("dedup_key", sa.String(64), nullable=False),
    sa.Column("detector", sa.String(32), nullable=False),
    sa.Column("rule_id", sa.String(RULE_ID), nullable=False),
    sa.Column("title", sa.String(TITLE), nullable=False),
    sa.Column("description", sa.Text),
    sa.Column("severity", sa.SmallInteger, nullable=False),
    sa.Column("entity", sa.String(ENTITY)),
    sa.Column("source", sa.String(128)),
    sa.Column("tags", JSON, nullable=False),
    sa.Column("event_ids", JSON, nullable=False),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("first_seen", Timestamp, nullable=False),
    sa.Column("last_seen", Timestamp, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Index(None, "dedup_key", "last_seen"),
    sa.Index(None, "created_at"),
    sa.Index(None, "last_seen", "id"),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("playbook", sa.String(256), nullable=False),
    sa.Column("playbook_version", sa.String(64), nullable=False),
    sa.Column("finding_id", sa.String(64)),
    sa.Column("entity", sa.String(512)),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("dry_run", sa.Boolean, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("finished_at", Timestamp),
    sa.Column("requested_by", sa.String(256), nullable=False, server_default="custodes"),
    sa.Column("parent_run_id", sa.String(64)),
    sa.Column("inputs", JSON, nullable=False, server_default="{}"),
    sa.Column("trigger", JSON, nullable=False, server_default="{}"),
    sa.Column("definition", JSON, nullable=False, server_default="{}"),
    sa.Column("outputs", JSON),
    sa.Column("owner", sa.String(128)),
    sa.Column("heartbeat_at", Timestamp),
    sa.Column("resumes", sa.Integer, nullable=False, server_default="0"),
    sa.UniqueConstraint("playbook", "finding_id"),
    sa.Index(None, "status", "heartbeat_at"),
    sa.Index(None, "entity", "status"),
    sa.Index(None, "playbook", "created_at"),
)

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("playbook", sa.String(256), nullable=False),
    # The finding's id, or for a webhook start (`receiver` set) the id of the record the receiver accepted.
    sa.Column("finding_id", sa.String(64), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("receiver", sa.String(128)),
    # A runner's lease on the row while it starts the run (a cluster's runners claim rows with SKIP LOCKED), or the
    # end of the hour its playbook's cap holds it back for.
    sa.Column("claimed_until", Timestamp),
    sa.UniqueConstraint("playbook", "finding_id"),
)

steps = sa.Table(
    "steps",
    metadata,
    sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("step_id", sa.String(128), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("action", sa.String(128), nullable=False),
    sa.Column("arguments", JSON, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("idempotency_key", sa.String(64), nullable=False, unique=True),
    sa.Column("result", JSON),
    sa.Column("error", sa.Text),
    sa.Column("started_at", Timestamp),
    sa.Column("finished_at", Timestamp),
    sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
    sa.Column("target", sa.String(512)),
    sa.Column("destructive", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("plan", JSON),
    sa.Column("plan_hash", sa.String(64)),
    sa.Column("expires_at", Timestamp),
    sa.Index(None, "destructive", "started_at"),
)

approvals = sa.Table(
    "approvals",
    metadata,
    sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("step_id", sa.String(128), primary_key=True),
    sa.Column("approver", sa.String(256), primary_key=True),
    sa.Column("decision", sa.String(16), nullable=False),
    sa.Column("plan_hash", sa.String(64), nullable=False),
    sa.Column("comment", sa.Text),
    sa.Column("at", Timestamp, nullable=False),
)

entity_locks = sa.Table(
    "entity_locks",
    metadata,
    sa.Column("entity", sa.String(512), primary_key=True),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("acquired_at", Timestamp, nullable=False),
)

controls = sa.Table(
    "controls",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", JSON, nullable=False),
    sa.Column("updated_by", sa.String(256), nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("at", Timestamp, nullable=False),
    sa.Column("actor", sa.String(256), nullable=False),
    sa.Column("action", sa.String(128), nullable=False),
    sa.Column("subject", sa.String(512)),
    sa.Column("details", JSON, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

checkpoints = sa.Table(
    "checkpoints",
    metadata,
    sa.Column("connector", sa.String(256), primary_key=True),
    sa.Column("value", JSON, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
)

connector_status = sa.Table(
    "connector_status",
    metadata,
    sa.Column("connector", sa.String(256), primary_key=True),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("events_total", sa.BigInteger, nullable=False),
    sa.Column("last_round_events", sa.Integer, nullable=False),
    sa.Column("events_per_second", sa.Float, nullable=False),
    sa.Column("newest_event", Timestamp),
    sa.Column("last_success", Timestamp),
    sa.Column("last_error", sa.Text),
    sa.Column("last_error_at", Timestamp),
    sa.Column("consecutive_failures", sa.Integer, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
)

correlation_groups = sa.Table(
    "correlation_groups",
    metadata,
    sa.Column("correlation_id", sa.String(128), primary_key=True),
    sa.Column("group_key", sa.String(64), primary_key=True),
    sa.Column("state", JSON, nullable=False),
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
)

correlation_clocks = sa.Table(
    "correlation_clocks",
    metadata,
    sa.Column("correlation_id", sa.String(128), primary_key=True),
    sa.Column("clock", sa.Double, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
)

cluster_partitions = sa.Table(
    "cluster_partitions",
    metadata,
    # <exchange>.<partition>: the partition queue whose correlation state this is
    sa.Column("name", sa.String(256), primary_key=True),
    # bumped by every batch committed: a worker whose state was loaded at another version reloads it
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("deliveries", sa.BigInteger, nullable=False),
    sa.Column("last_message", sa.String(64)),
    sa.Column("worker", sa.String(128)),  # the worker that committed the last batch
    sa.Column("state", JSON, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
)

cluster_groups = sa.Table(
    "cluster_groups",
    metadata,
    # a partition's correlation groups, as correlation_groups holds one process's
    sa.Column("partition", sa.String(256), primary_key=True),
    sa.Column("correlation_id", sa.String(128), primary_key=True),
    sa.Column("group_key", sa.String(64), primary_key=True),
    sa.Column("state", JSON, nullable=False),
    sa.Column("position", sa.BigInteger, nullable=False),
)

cluster_workers = sa.Table(
    "cluster_workers",
    metadata,
    sa.Column("exchange", sa.String(200), primary_key=True),
    sa.Column("worker", sa.String(128), primary_key=True),
    sa.Column("seen_at", Timestamp, nullable=False),
)

scoring_state = sa.Table(
    "scoring_state",
    metadata,
    sa.Column("entity", sa.String(128), primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("state", JSON, nullable=False),
    sa.Column("bytes", sa.Integer, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
)


def _day_score_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("entity", sa.String(128), primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("risk", sa.Float, nullable=False),
        sa.Column("points", sa.Float, nullable=False),
        sa.Column("place", sa.Integer, nullable=True),  # in the closed day's review order (1 first); null while open
        sa.Column("detail", JSON, nullable=False),
        sa.Column("event_ids", JSON, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
    ]


scoring_scores = sa.Table(
    "scoring_scores",
    metadata,
    *_day_score_columns(),
    sa.Index(None, "day", "risk"),
    sa.Index(None, "day", "place"),
)

scoring_scores_staged = sa.Table(
    "scoring_scores_staged",
    metadata,
    sa.Column("run", sa.String(32), primary_key=True),
    *_day_score_columns(),
)
"""A re-score's day scores as it makes them, by run: its save moves them into `scoring_scores` in one transaction."""

scoring_meta = sa.Table(
    "scoring_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", JSON, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
)

hunt_runs = sa.Table(
    "hunt_runs",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("hunt", sa.String(256), nullable=False),
    sa.Column("slot", Timestamp),
    sa.Column("trigger", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("window_start", Timestamp, nullable=False),
    sa.Column("window_end", Timestamp, nullable=False),
    sa.Column("started_at", Timestamp, nullable=False),
    sa.Column("finished_at", Timestamp, nullable=False),
    sa.Column("pushed_down", JSON, nullable=False),
    sa.Column("in_process", JSON, nullable=False),
    sa.Column("events_scanned", sa.BigInteger, nullable=False),
    sa.Column("findings", JSON, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("worker", sa.String(256), nullable=False),
    sa.UniqueConstraint("hunt", "slot"),
    sa.Index(None, "hunt", "started_at"),
)

identity_accounts = sa.Table(
    "identity_accounts",
    metadata,
    sa.Column("id", sa.String(768), primary_key=True),
    sa.Column("connector", sa.String(256), nullable=False),
    sa.Column("provider", sa.String(16), nullable=False),
    sa.Column("native_id", sa.String(512), nullable=False),
    sa.Column("entity", sa.String(512), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("login", sa.String(512)),
    sa.Column("display_name", sa.String(512)),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("created", Timestamp),
    sa.Column("last_sign_in", Timestamp),
    sa.Column("mfa", sa.Boolean),
    sa.Column("attributes", JSON, nullable=False),
    sa.Column("warnings", JSON, nullable=False),
    sa.Column("collected_at", Timestamp, nullable=False),
    sa.Index(None, "connector"),
    sa.Index(None, "entity"),
)

identity_grants = sa.Table(
    "identity_grants",
    metadata,
    sa.Column(
        "account_id", sa.String(768), sa.ForeignKey("identity_accounts.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("kind", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(512), primary_key=True),
    sa.Column("privileged", sa.Boolean, nullable=False),
    sa.Column("created", Timestamp),
    sa.Column("last_used", Timestamp),
    sa.Column("attributes", JSON, nullable=False),
)

evidence_bundles = sa.Table(
    "evidence_bundles",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("entity", sa.String(512), nullable=False),
    sa.Column("since", Timestamp, nullable=False),
    sa.Column("until", Timestamp, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("location", sa.String(1024), nullable=False),
    sa.Column("manifest_sha256", sa.String(64), nullable=False),
    sa.Column("files", JSON, nullable=False),
    sa.Column("created_by", sa.String(256), nullable=False),
    sa.Column("run_id", sa.String(64)),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Index(None, "entity", "created_at"),
)

case_notes = sa.Table(
    "case_notes",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("case_id", sa.String(512), nullable=False),
    sa.Column("author", sa.String(256), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("run_id", sa.String(64)),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Index(None, "case_id", "created_at"),
)

toggles = sa.Table(
    "toggles",
    metadata,
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("name", sa.String(512), primary_key=True),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("updated_by", sa.String(256), nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
)
"""Playbooks and rules switched on or off through the API (kind `playbook` or `rule`); applied live and at start."""
