"""The schema, shared by SQLite and PostgreSQL.

Every tenant table's primary key starts with ``workspace_id`` and every
repository query filters on it. Times are integer microseconds since the epoch
(UTC) so comparisons are identical on both databases; client timestamps are
also kept as the exact string sent. PII never reaches these tables in plain
text: ``pii`` columns hold AES-GCM ciphertexts under the entity's data key.

The data keys themselves live apart, in ``entity_keys``: erasing an entity
deletes its key row, which makes every copy of its ciphertexts (in any dump or
backup of the data tables taken earlier) undecryptable. Back up ``entity_keys``
with a retention no longer than the purge period, or leave it out of long-lived
dumps (``pg_dump --exclude-table=entity_keys``); see README, "Data protection".
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
# An exact decimal: numeric on PostgreSQL, the decimal's text on SQLite (summed by decimal_sum).
Amount = sa.Text().with_variant(postgresql.NUMERIC(), "postgresql")
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
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_at", Micros, nullable=False),
    sa.Column("updated_at", Micros, nullable=False),
    sa.Column("deleted_at", Micros, nullable=True),
    sa.Column("purge_after", Micros, nullable=True),
    # Set when the entity is purged: the row is then a tombstone (no attributes, no
    # PII, no key) that keeps the externalId refused until this time.
    sa.Column("suppressed_until", Micros, nullable=True),
    sa.Index(None, "workspace_id", "updated_at", "external_id"),
    # The retention sweep's work list (PostgreSQL indexes only deleted entities).
    sa.Index(None, "suppressed_until", "purge_after", postgresql_where=sa.text("deleted_at IS NOT NULL")),
    # Analytics: a workspace's deleted entities, whose events are subtracted from the rollups.
    sa.Index(
        "ix_entities_deleted",
        "workspace_id",
        "external_id",
        postgresql_where=sa.text("deleted_at IS NOT NULL"),
        sqlite_where=sa.text("deleted_at IS NOT NULL"),
    ),
)

entity_keys = sa.Table(
    "entity_keys",
    metadata,
    # Each entity's data key, wrapped (AES-GCM) by the workspace key. Erasure deletes
    # the row: this table is the one place the key material of an entity lives.
    sa.Column("workspace_id", Id, primary_key=True),
    sa.Column("external_id", ExternalId, primary_key=True),
    sa.Column("data_key", sa.String(200), nullable=False),
    sa.Column("created_at", Micros, nullable=False),
)

workspace_secrets = sa.Table(
    "workspace_secrets",
    metadata,
    # Random per-workspace secrets (purpose "fingerprint": the eventId-replay MAC key),
    # wrapped by the workspace key like data keys, so rotating the master key re-wraps
    # this one row instead of rewriting every event fingerprint.
    sa.Column("workspace_id", Id, primary_key=True),
    sa.Column("purpose", sa.String(32), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("wrapped", sa.String(200), nullable=False),
    sa.Column("created_at", Micros, nullable=False),
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
    # Keyed hash (BLAKE2b under the workspace's fingerprint secret) of what the client
    # sent, for replays: "s<secret version>.<hex>".
    sa.Column("fingerprint", sa.String(100), nullable=False),
    sa.Column("timestamp", sa.String(64), nullable=True),
    sa.Column("ts", Micros, nullable=False),
    sa.Column("received_at", Micros, nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Index(None, "workspace_id", "external_id", "ts", "seq", "event_id"),
    # Retention: a workspace's events older than a cut-off, in bounded chunks.
    sa.Index(None, "workspace_id", "ts"),
    # Analytics: one type's events over a range (counts by type, transaction sums).
    sa.Index(None, "workspace_id", "type", "ts"),
)

event_rollups = sa.Table(
    "event_rollups",
    metadata,
    # Analytics rollups (storage/rollups.py): per workspace and UTC hour (floor of ts / 1 h),
    # event counts by type and, for transactions whose amount is a decimal string, counts and
    # exact sums by currency, transaction type and amount scale. Writers append delta rows
    # (pending) in the transaction that inserts or deletes the events; compaction folds them.
    # No key: several rows may share a key until folded, and nothing ever updates one.
    sa.Column("workspace_id", Id, nullable=False),
    sa.Column("hour", sa.BigInteger, nullable=False),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("currency", sa.Text, nullable=True),
    sa.Column("tx_type", sa.Text, nullable=True),
    sa.Column("scale", sa.Integer, nullable=True),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Column("amount", Amount, nullable=True),
    sa.Column("pending", sa.Boolean, nullable=False),
    sa.Index(None, "workspace_id", "hour"),
    sa.Index(
        "ix_event_rollups_pending",
        "workspace_id",
        "hour",
        postgresql_where=sa.text("pending"),
        sqlite_where=sa.text("pending"),
    ),
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
    # When the job became its workspace's next (acceptance, or the previous job's end):
    # workers claim in this order, so workspaces waiting on one worker are served in turn.
    sa.Column("ready_at", Micros, nullable=False, server_default="0"),  # 0: see migration 0010
    sa.Column("started_at", Micros, nullable=True),
    sa.Column("completed_at", Micros, nullable=True),
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("lease_until", Micros, nullable=True),
    sa.UniqueConstraint("workspace_id", "idempotency_key"),
    sa.Index(None, "status", "seq"),
    sa.Index(None, "status", "ready_at"),
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
    # json, not jsonb, on PostgreSQL: written once, kept as text (migration 0009).
    sa.Column("outcomes", sa.JSON(), nullable=False),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    # Who did what to which workspace, and when; never PII (targets are externalIds
    # or key ids, details are field names and settings values).
    sa.Column("workspace_id", Id, primary_key=True),
    sa.Column("id", Id, primary_key=True),
    sa.Column("at", Micros, nullable=False),
    sa.Column("actor", sa.String(64), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target", ExternalId, nullable=True),
    sa.Column("details", Json, nullable=False),
    # Recording order (newest first in listings); ties across processes broken by id.
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Index(None, "workspace_id", "seq", "id"),
)

rate_limits = sa.Table(
    "rate_limits",
    metadata,
    # An operator's own rates (requests a second; the burst is twice that) for its live
    # and test workspaces alike; NULL means the server's default for that class.
    sa.Column("operator_id", Id, sa.ForeignKey("operators.id"), primary_key=True),
    sa.Column("writes", sa.Integer, nullable=True),
    sa.Column("batches", sa.Integer, nullable=True),
    sa.Column("reads", sa.Integer, nullable=True),
    sa.Column("updated_at", Micros, nullable=False),
)

rate_buckets = sa.Table(
    "rate_buckets",
    metadata,
    # Token buckets shared by the API processes (``<workspace id>:<class>``), when the
    # limiter keeps them in the database. UNLOGGED on PostgreSQL: after a crash the
    # buckets simply start full. Times are seconds since the epoch, as floats.
    sa.Column("key", sa.String(128), primary_key=True),
    sa.Column("tokens", sa.Double, nullable=False),
    sa.Column("refilled_at", sa.Double, nullable=False),
    sa.Column("taken", sa.Integer, nullable=False),
)
