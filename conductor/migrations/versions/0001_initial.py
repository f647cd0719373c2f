"""初始表结构：jobs 与 scheduler_epochs。

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("account", sa.String(255), nullable=False),
        sa.Column("partition", sa.String(100), nullable=False),
        sa.Column("script", sa.Text, nullable=False),
        sa.Column("environment", JSONB, nullable=False, server_default="{}"),
        sa.Column("work_dir", sa.String(1024), nullable=False),
        sa.Column("stdout_path", sa.String(2048), nullable=False),
        sa.Column("stderr_path", sa.String(2048), nullable=False),
        sa.Column("ntasks_per_node", sa.Integer, nullable=False),
        sa.Column("cpus_per_task", sa.Integer, nullable=False),
        sa.Column("cpus", sa.Integer, nullable=False),
        sa.Column("memory_bytes", sa.BigInteger, nullable=False),
        sa.Column("time_limit_seconds", sa.Integer, nullable=True),
        sa.Column("exclusive", sa.Boolean, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("error_msg", sa.Text, nullable=True),
        sa.Column("exit_code", sa.String(32), nullable=True),
        sa.Column("submit_time", TZ, nullable=False),
        sa.Column("eligible_time", TZ, nullable=True),
        sa.Column("start_time", TZ, nullable=True),
        sa.Column("end_time", TZ, nullable=True),
        sa.Column("node_id", sa.String(64), nullable=True),
        sa.Column("node_name", sa.String(255), nullable=True),
        sa.Column("node_host", sa.String(255), nullable=True),
        sa.Column("released_at", TZ, nullable=True),
        sa.Column("epoch", sa.Integer, nullable=True),
        sa.Column("agent_id", sa.String(64), nullable=True),
        sa.Column("token", sa.String(64), nullable=True),
        sa.Column("data_source", sa.String(32), nullable=False),
    )
    op.create_index(
        "ix_jobs_pending", "jobs", ["id"], postgresql_where=sa.text("state = 'PENDING'")
    )
    op.create_index(
        "ix_jobs_holding", "jobs", ["node_id"], postgresql_where=sa.text("released_at IS NULL")
    )
    op.create_index("ix_jobs_state", "jobs", ["state"])
    op.create_table(
        "scheduler_epochs",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("started_at", TZ, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("scheduler_epochs")
    op.drop_table("jobs")
