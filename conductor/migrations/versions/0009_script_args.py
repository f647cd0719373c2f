"""批处理脚本的参数（sbatch 脚本 参数...）：jobs.script_args，JSON 字符串数组；
取消者的 uid（sacct 的 CANCELLED by <uid>）：jobs.cancelled_by_uid。

旧行取默认值即与原来相同：脚本不带参数运行；取消者不明（sacct 只印 CANCELLED）。

Revision ID: 0009_script_args
Revises: 0008_slurm_dropin
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0009_script_args"
down_revision = "0008_slurm_dropin"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "jobs", sa.Column("script_args", JSONB, nullable=False, server_default=sa.text("'[]'"))
    )
    op.add_column("jobs", sa.Column("cancelled_by_uid", sa.Integer, nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "cancelled_by_uid")
    op.drop_column("jobs", "script_args")
