"""rate limits: per-operator rates and the shared token buckets

``rate_buckets`` is UNLOGGED on PostgreSQL: it holds only bucket levels, which
start full again if a crash loses them, and skipping the WAL keeps leases cheap.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rate_limits",
        sa.Column("operator_id", sa.String(length=64), nullable=False),
        sa.Column("writes", sa.Integer(), nullable=True),
        sa.Column("batches", sa.Integer(), nullable=True),
        sa.Column("reads", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["operator_id"], ["operators.id"], name=op.f("fk_rate_limits_operator_id_operators")
        ),
        sa.PrimaryKeyConstraint("operator_id", name=op.f("pk_rate_limits")),
    )
    op.create_table(
        "rate_buckets",
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("tokens", sa.Double(), nullable=False),
        sa.Column("refilled_at", sa.Double(), nullable=False),
        sa.Column("taken", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_rate_buckets")),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE rate_buckets SET UNLOGGED")


def downgrade() -> None:
    op.drop_table("rate_buckets")
    op.drop_table("rate_limits")
