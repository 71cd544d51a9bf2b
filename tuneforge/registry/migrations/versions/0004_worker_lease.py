"""Workers hold jobs on a lease: `jobs.worker_host` and `jobs.heartbeat_at` beside `worker_pid`.

With one worker per home (SQLite) a job's `worker_pid` said enough: the worker that starts next on
that home holds its lock, so every job another worker held was cut off. Workers on several machines
share one PostgreSQL registry, and a job held by another machine's worker may be running fine. A
worker now names its host and home (`worker_host`) and renews `heartbeat_at` while it holds a job;
a job whose heartbeat is older than the lease was cut off wherever it ran, and any worker takes it
back. Rows held before this revision have no host: the worker of their (single) home recovers them.

Revision ID: 0004_worker_lease
Revises: 0003_evaluation_project
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_worker_lease"
down_revision = "0003_evaluation_project"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("worker_host", sa.Text(), nullable=True))
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("heartbeat_at")
        batch.drop_column("worker_host")
