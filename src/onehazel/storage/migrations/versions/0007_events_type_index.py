"""events (workspace_id, type, ts) index for analytics

Counts of one event type over a range (``GET /analytics/events?type=``) and the
transaction sums (``type = 'transaction'``) read only that type's index range.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(op.f("ix_events_workspace_id_type_ts"), "events", ["workspace_id", "type", "ts"])


def downgrade() -> None:
    op.drop_index(op.f("ix_events_workspace_id_type_ts"), table_name="events")
