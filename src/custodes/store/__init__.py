"""Persistence: SQLAlchemy Core schema, Alembic migrations, and the async store API."""

from custodes.store.database import (
    AuditRecord,
    AuditVerification,
    ConnectorStatus,
    Store,
    Transaction,
    audit_hash,
)

__all__ = ["AuditRecord", "AuditVerification", "ConnectorStatus", "Store", "Transaction", "audit_hash"]
