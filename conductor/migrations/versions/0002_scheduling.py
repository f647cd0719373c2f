"""调度：优先级与队列顺序、挂起、依赖、等待原因、作业数组。

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

RUNNABLE = "state = 'PENDING' AND NOT held AND dependency_state IN ('NONE', 'SATISFIED')"


def upgrade() -> None:
    op.add_column("jobs", sa.Column("priority", sa.Integer, nullable=False, server_default="0"))
    op.add_column("jobs", sa.Column("queue_rank", sa.Float, nullable=False, server_default="0"))
    op.add_column("jobs", sa.Column("held", sa.Boolean, nullable=False, server_default="false"))
    op.add_column("jobs", sa.Column("dependency", sa.Text))
    op.add_column(
        "jobs",
        sa.Column("dependency_state", sa.String(16), nullable=False, server_default="NONE"),
    )
    op.add_column("jobs", sa.Column("state_reason", sa.String(32)))
    op.add_column("jobs", sa.Column("array_job_id", sa.BigInteger))
    op.add_column("jobs", sa.Column("array_task_id", sa.Integer))
    op.add_column("jobs", sa.Column("array_spec", sa.String(255)))
    op.add_column("jobs", sa.Column("array_max_running", sa.Integer))
    # 已有作业按提交顺序排队（priority 为 0）
    op.execute("UPDATE jobs SET queue_rank = EXTRACT(EPOCH FROM submit_time) / 60.0")
    op.create_index(
        "ix_jobs_queue", "jobs", ["queue_rank", "id"], postgresql_where=sa.text(RUNNABLE)
    )
    op.create_index(
        "ix_jobs_array",
        "jobs",
        ["array_job_id"],
        postgresql_where=sa.text("array_job_id IS NOT NULL"),
    )
    op.create_index(
        "ix_jobs_dependency_waiting",
        "jobs",
        ["id"],
        postgresql_where=sa.text("state = 'PENDING' AND dependency_state = 'WAITING'"),
    )


def downgrade() -> None:
    for index in ("ix_jobs_dependency_waiting", "ix_jobs_array", "ix_jobs_queue"):
        op.drop_index(index, table_name="jobs")
    for column in (
        "array_max_running",
        "array_spec",
        "array_task_id",
        "array_job_id",
        "state_reason",
        "dependency_state",
        "dependency",
        "held",
        "queue_rank",
        "priority",
    ):
        op.drop_column("jobs", column)
