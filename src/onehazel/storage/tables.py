"""The schema, shared by SQLite and PostgreSQL.

Every tenant table's primary key starts with ``workspace_id`` and every
repository query filters on it. Times are integer microseconds since the epoch
(UTC) so comparisons are identical on both databases; client timestamps are
also kept as the exact string sent. PII never reaches these tables in plain
text: ``pii`` columns hold AES-GCM ciphertexts under the entity's data key.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING)

Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Micros = sa.BigInteger
Id = sa.String(64)
ExternalId = sa.String(256)

operators = sa.Table(
    "operators",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_at", Micros, nullable=False),
)

workspaces = sa.Table(
    "workspaces",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("operator_id", Id, sa.ForeignKey("operators.id"), nullable=False),
    sa.Column("mode", sa.String(8), nullable=False),
    sa.Column("created_at", Micros, nullable=False),
    sa.UniqueConstraint("operator_id", "mode"),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("workspace_id", Id, sa.ForeignKey("workspaces.id"), nullable=False, index=True),
    # SHA-256 of the whole key: secrets have 190+ bits of entropy, so a fast hash is
    # safe, and lookup by an indexed hash compares no secret bytes (no timing leak).
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("hint", sa.String(32), nullable=False),
    sa.Column("created_at", Micros, nullable=False),
    sa.Column("revoked_at", Micros, nullable=True),
)

settings = sa.Table(
    "settings",
    metadata,
    sa.Column("workspace_id", Id, sa.ForeignKey("workspaces.id"), primary_key=True),
    sa.Column("template_id", sa.String(64), nullable=True),
    sa.Column("events_days", sa.Integer, nullable=True),
    sa.Column("deleted_entities_days", sa.Integer, nullable=False),
    sa.Column("updated_at", Micros, nullable=True),
)

entities = sa.Table(
    "entities",
    metadata,
    sa.Column("workspace_id", Id, primary_key=True),
    sa.Column("external_id", ExternalId, primary_key=True),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("attributes", Json, nullable=False),
    sa.Column("pii", Json, nullable=False),
    # The entity's data key, wrapped by the workspace key; NULL once purged.
    sa.Column("data_key", sa.String(200), nullable=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_at", Micros, nullable=False),
    sa.Column("updated_at", Micros, nullable=False),
    sa.Column("deleted_at", Micros, nullable=True),
    sa.Column("purge_after", Micros, nullable=True),
    sa.Index(None, "workspace_id", "updated_at", "external_id"),
)

events = sa.Table(
    "events",
    metadata,
    # The primary key is the idempotency record: it commits with the event itself.
    sa.Column("workspace_id", Id, primary_key=True),
    sa.Column("event_id", ExternalId, primary_key=True),
    sa.Column("external_id", ExternalId, nullable=False),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("data", Json, nullable=False),
    sa.Column("pii", Json, nullable=True),
    # Keyed hash (HMAC under the workspace key) of what the client sent, for replays.
    sa.Column("fingerprint", sa.String(100), nullable=False),
    sa.Column("timestamp", sa.String(64), nullable=True),
    sa.Column("ts", Micros, nullable=False),
    sa.Column("received_at", Micros, nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Index(None, "workspace_id", "external_id", "ts", "seq", "event_id"),
)

states = sa.Table(
    "states",
    metadata,
    sa.Column("workspace_id", Id, primary_key=True),
    sa.Column("external_id", ExternalId, primary_key=True),
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", Json, nullable=False),
    sa.Column("timestamp", sa.String(64), nullable=True),
    sa.Column("ts", Micros, nullable=False),
    sa.Column("updated_at", Micros, nullable=False),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("workspace_id", Id, primary_key=True),
    sa.Column("id", Id, primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("total", sa.Integer, nullable=False),
    # Index of the next item to apply; committed with each chunk's effects.
    sa.Column("processed", sa.Integer, nullable=False),
    sa.Column("succeeded", sa.Integer, nullable=False),
    sa.Column("failed", sa.Integer, nullable=False),
    sa.Column("duplicates", sa.Integer, nullable=False),
    sa.Column("errors", Json, nullable=False),
    sa.Column("warnings", Json, nullable=False),
    # The accepted batch, compressed and sealed with AES-GCM under the workspace key.
    sa.Column("payload", sa.LargeBinary, nullable=True),
    sa.Column("idempotency_key", sa.String(256), nullable=True),
    sa.Column("body_hash", sa.String(100), nullable=True),
    # Acceptance order: a workspace's jobs are applied strictly in this order.
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("created_at", Micros, nullable=False),
    sa.Column("started_at", Micros, nullable=True),
    sa.Column("completed_at", Micros, nullable=True),
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("lease_until", Micros, nullable=True),
    sa.UniqueConstraint("workspace_id", "idempotency_key"),
    sa.Index(None, "status", "seq"),
    sa.Index(None, "workspace_id", "status", "seq"),
    sa.Index(None, "created_at"),
)

job_chunks = sa.Table(
    "job_chunks",
    metadata,
    # One row per applied chunk: the item outcomes, written in the chunk's transaction.
    sa.Column("workspace_id", Id, primary_key=True),
    sa.Column("job_id", Id, primary_key=True),
    sa.Column("start_index", sa.Integer, primary_key=True),
    sa.Column("outcomes", Json, nullable=False),
)
