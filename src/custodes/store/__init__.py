"""Persistence: SQLAlchemy Core schema, Alembic migrations, and the async store API."""

from custodes.store import cases  # the case tables join the store's one metadata
from custodes.store.database import (
    AuditRecord,
    AuditVerification,
    ConnectorStatus,
    Store,
    Transaction,
    audit_hash,
)

__all__ = ["AuditRecord", "AuditVerification", "ConnectorStatus", "Store", "Transaction", "audit_hash", "cases"]
