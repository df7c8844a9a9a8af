"""workspace secrets (the eventId-replay fingerprint key)

Each workspace gets random secrets (today one: ``purpose = 'fingerprint'``,
version 1), stored only wrapped by the workspace key under a master key, as
``v1.<master key id>.<base64url>``. Fingerprints are keyed by the secret, not
by the master key, so rotating the master key re-wraps one short row per
workspace instead of rewriting every event.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "workspace_secrets",
        sa.Column("workspace_id", sa.String(length=64), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("wrapped", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("workspace_id", "purpose", "version", name=op.f("pk_workspace_secrets")),
    )


def downgrade() -> None:
    op.drop_table("workspace_secrets")
