"""Runs belong to a project: `runs.project`, so whose a run is takes one query.

Before, a run's project was found through the job that trained it (`jobs.run_id`), and a run with no
job (trained with `tuneforge train`) belonged to the default project. This revision writes exactly
that answer into the new column for every existing run.

Revision ID: 0002_run_project
Revises: 0001_baseline
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_run_project"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("project", sa.String(64), nullable=False, server_default="default"))
        batch.create_index("ix_runs_project", ["project"], unique=False)
    op.execute(
        "UPDATE runs SET project = (SELECT jobs.project FROM jobs WHERE jobs.run_id = runs.id) "
        "WHERE EXISTS (SELECT 1 FROM jobs WHERE jobs.run_id = runs.id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_index("ix_runs_project")
        batch.drop_column("project")
