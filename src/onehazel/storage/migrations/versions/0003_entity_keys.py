"""entity keys apart from the data; tombstones; retention indexes

Moves every entity's wrapped data key out of ``entities.data_key`` into its own
table ``entity_keys``, so erasure (deleting the key row) reaches every copy of
the data tables, and so the keys can be backed up on their own, shorter
schedule. Adds ``entities.suppressed_until`` (purged tombstones) and the
indexes the retention sweep uses.

On a large PostgreSQL database the new ``events (workspace_id, ts)`` index is
built inside the migration's transaction and blocks writes to ``events`` while
it builds; to avoid that, create it beforehand with
``CREATE INDEX CONCURRENTLY ix_events_workspace_id_ts ON events (workspace_id, ts)``
(this migration then skips it).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_DELETED = sa.text("deleted_at IS NOT NULL")


def upgrade() -> None:
    op.create_table(
        "entity_keys",
        sa.Column("workspace_id", sa.String(length=64), nullable=False),
        sa.Column("external_id", sa.String(length=256), nullable=False),
        sa.Column("data_key", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("workspace_id", "external_id", name=op.f("pk_entity_keys")),
    )
    op.execute(
        "INSERT INTO entity_keys (workspace_id, external_id, data_key, created_at) "
        "SELECT workspace_id, external_id, data_key, created_at FROM entities WHERE data_key IS NOT NULL"
    )
    with op.batch_alter_table("entities", schema=None) as batch_op:
        batch_op.add_column(sa.Column("suppressed_until", sa.BigInteger(), nullable=True))
        batch_op.drop_column("data_key")
    with op.batch_alter_table("entities", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_entities_suppressed_until_purge_after"),
            ["suppressed_until", "purge_after"],
            unique=False,
            postgresql_where=_DELETED,
        )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE INDEX IF NOT EXISTS ix_events_workspace_id_ts ON events (workspace_id, ts)")
    else:
        with op.batch_alter_table("events", schema=None) as batch_op:
            batch_op.create_index(
                batch_op.f("ix_events_workspace_id_ts"), ["workspace_id", "ts"], unique=False
            )


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_events_workspace_id_ts"))
    with op.batch_alter_table("entities", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_entities_suppressed_until_purge_after"))
    with op.batch_alter_table("entities", schema=None) as batch_op:
        batch_op.add_column(sa.Column("data_key", sa.String(length=200), nullable=True))
        batch_op.drop_column("suppressed_until")
    op.execute(
        "UPDATE entities SET data_key = (SELECT k.data_key FROM entity_keys k "
        "WHERE k.workspace_id = entities.workspace_id AND k.external_id = entities.external_id)"
    )
    op.drop_table("entity_keys")
