"""job_chunks.outcomes: json with lz4 compression on PostgreSQL (was jsonb)

Item outcomes are written once per chunk (~500 KB of JSON for 5000 events), read
back a page at a time and searched only by the erasure sweep. ``jsonb`` made every
chunk's write convert and then pglz-compress the whole array on the batch's
critical path (~16 ms per 5000 outcomes); ``json`` keeps the text as sent (checked,
not converted) and lz4 compresses it several times faster (~3 ms). Reads and the
sweep's ``json_array_elements`` search answer the same. lz4 is used where the
server was built with it (PostgreSQL 14+ on every common distribution); otherwise the
column keeps the server's default compression. SQLite stores JSON as text already.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _has_lz4() -> bool:
    found = op.get_bind().execute(
        sa.text("SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'")
    )
    row = found.first()
    return row is not None and "lz4" in (row[0] or [])


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE job_chunks ALTER COLUMN outcomes TYPE json USING outcomes::json")
    if _has_lz4():
        op.execute("ALTER TABLE job_chunks ALTER COLUMN outcomes SET COMPRESSION lz4")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    version = op.get_bind().execute(sa.text("SELECT current_setting('server_version_num')::int")).scalar()
    if version is not None and version >= 140000:  # no SET COMPRESSION before PostgreSQL 14
        op.execute("ALTER TABLE job_chunks ALTER COLUMN outcomes SET COMPRESSION default")
    op.execute("ALTER TABLE job_chunks ALTER COLUMN outcomes TYPE jsonb USING outcomes::jsonb")
