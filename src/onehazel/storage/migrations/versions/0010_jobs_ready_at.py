"""jobs.ready_at: when a job became its workspace's next, the order workers claim in

Workers claimed the oldest runnable job by acceptance (``seq``). A runnable job is
the first unfinished one of its workspace, so a workspace that queued a hundred
batches kept the worker until all hundred were done: its second job, accepted
before another workspace's only one, was always older. ``ready_at`` is the
acceptance time, moved to the finishing time of the job before it when that one
finishes; claiming by ``ready_at`` serves waiting workspaces in turn. Existing
jobs start from their acceptance time.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A default, so that a server of the previous version still running while this applies
    # (it does not know the column) can go on accepting batches; its jobs are claimed first.
    op.add_column("jobs", sa.Column("ready_at", sa.BigInteger(), nullable=False, server_default="0"))
    op.execute("UPDATE jobs SET ready_at = created_at")
    op.create_index(op.f("ix_jobs_status_ready_at"), "jobs", ["status", "ready_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_jobs_status_ready_at"), table_name="jobs")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("ready_at")
