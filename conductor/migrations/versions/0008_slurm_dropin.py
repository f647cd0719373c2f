"""议题 18：重新排队（--requeue、重启次数）、--open-mode、--signal，以及作业与作业步的用量
（峰值常驻内存、用户态与内核态 CPU 时间）。

旧行取默认值即与原来的含义相同：不自动重新排队、没有信号、没有用量记录。

Revision ID: 0008_slurm_dropin
Revises: 0007_multinode
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_slurm_dropin"
down_revision = "0007_multinode"
branch_labels = None
depends_on = None


def _usage() -> tuple[sa.Column, ...]:
    return (
        sa.Column("max_rss_bytes", sa.BigInteger, nullable=True),
        sa.Column("user_cpu_seconds", sa.Float, nullable=True),
        sa.Column("system_cpu_seconds", sa.Float, nullable=True),
    )


def _job_columns() -> tuple[sa.Column, ...]:
    return (
        sa.Column("requeue", sa.Boolean, nullable=False, server_default="false"),
        sa.Column("open_mode", sa.String(16), nullable=True),
        sa.Column("signal_number", sa.Integer, nullable=True),
        sa.Column("signal_seconds", sa.Integer, nullable=True),
        sa.Column("signal_batch", sa.Boolean, nullable=False, server_default="false"),
        sa.Column("restart_count", sa.Integer, nullable=False, server_default="0"),
        *_usage(),
    )


def _step_columns() -> tuple[sa.Column, ...]:
    return (*_usage(), sa.Column("ave_rss_bytes", sa.BigInteger, nullable=True))


def upgrade() -> None:
    for column in _job_columns():
        op.add_column("jobs", column)
    for column in _step_columns():
        op.add_column("job_steps", column)


def downgrade() -> None:
    for column in reversed(_step_columns()):
        op.drop_column("job_steps", column.name)
    for column in reversed(_job_columns()):
        op.drop_column("jobs", column.name)
