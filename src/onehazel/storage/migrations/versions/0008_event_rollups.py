"""event_rollups (analytics rollups, backfilled) and an index of deleted entities

Per-hour event counts and exact transaction sums per workspace, kept exact by delta
rows written with every change to ``events`` (see ``storage/rollups.py``); this
migration fills them from the events already stored. Deleted entities' events are
subtracted at query time, found through the new partial index.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from onehazel.storage.rollups import backfill_sql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "event_rollups",
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("hour", sa.BigInteger, nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("currency", sa.Text, nullable=True),
        sa.Column("tx_type", sa.Text, nullable=True),
        sa.Column("scale", sa.Integer, nullable=True),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("amount", sa.Text().with_variant(postgresql.NUMERIC(), "postgresql"), nullable=True),
        sa.Column("pending", sa.Boolean, nullable=False),
    )
    op.create_index(op.f("ix_event_rollups_workspace_id_hour"), "event_rollups", ["workspace_id", "hour"])
    op.create_index(
        "ix_event_rollups_pending",
        "event_rollups",
        ["workspace_id", "hour"],
        postgresql_where=sa.text("pending"),
        sqlite_where=sa.text("pending"),
    )
    op.create_index(
        "ix_entities_deleted",
        "entities",
        ["workspace_id", "external_id"],
        postgresql_where=sa.text("deleted_at IS NOT NULL"),
        sqlite_where=sa.text("deleted_at IS NOT NULL"),
    )
    op.execute(sa.text(backfill_sql(op.get_bind().dialect.name == "postgresql")))


def downgrade() -> None:
    op.drop_index("ix_entities_deleted", table_name="entities")
    op.drop_table("event_rollups")
