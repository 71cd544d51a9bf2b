"""Evaluations belong to a project and have a status: `evaluations.project`, `status`, `error`.

The dashboard starts evaluations for a project and lists a project's own, so an evaluation needs the
project beside it, and a row from the moment it starts (status `running`, then `succeeded` or
`failed` with its error). Existing rows finished (`tuneforge eval` records an evaluation when it
is done): they are `succeeded`, of their run's project, and of the default project where they
evaluated base models alone (the CLI is the operator's, whose models are the default project's).

Revision ID: 0003_evaluation_project
Revises: 0002_run_project
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_evaluation_project"
down_revision = "0002_run_project"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("evaluations") as batch:
        batch.add_column(sa.Column("project", sa.String(64), nullable=False, server_default="default"))
        batch.add_column(sa.Column("status", sa.String(16), nullable=False, server_default="succeeded"))
        batch.add_column(sa.Column("error", sa.Text(), nullable=True))
        batch.create_index("ix_evaluations_project", ["project"], unique=False)
    op.execute(
        "UPDATE evaluations SET project = (SELECT runs.project FROM runs WHERE runs.id = evaluations.run_id) "
        "WHERE EXISTS (SELECT 1 FROM runs WHERE runs.id = evaluations.run_id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("evaluations") as batch:
        batch.drop_index("ix_evaluations_project")
        batch.drop_column("error")
        batch.drop_column("status")
        batch.drop_column("project")
