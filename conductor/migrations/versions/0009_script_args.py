"""批处理脚本的参数（sbatch 脚本 参数...）：jobs.script_args，JSON 字符串数组。

旧行取默认的空数组，即与原来相同：脚本不带参数运行。

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


def downgrade() -> None:
    op.drop_column("jobs", "script_args")
