"""议题 17 的多节点作业：请求的节点数（-N）、分配的全部节点，以及作业步（srun）的记录。

node_id/node_name 仍是第一个节点（运行批处理脚本的节点），单节点的代码照旧可用；
node_ids/node_names 列出整个分配（认领时写入，单节点作业为一个元素的列表，旧行为空）。

Revision ID: 0007_multinode
Revises: 0006_resources
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0007_multinode"
down_revision = "0006_resources"
branch_labels = None
depends_on = None

COLUMNS: tuple[sa.Column, ...] = (
    # 旧行都是单节点作业
    sa.Column("nodes", sa.Integer, nullable=False, server_default="1"),
    sa.Column("node_ids", JSONB, nullable=True),
    sa.Column("node_names", JSONB, nullable=True),
)


def upgrade() -> None:
    for column in COLUMNS:
        op.add_column("jobs", column)
    op.create_table(
        "job_steps",
        sa.Column(
            "job_id",
            sa.BigInteger,
            sa.ForeignKey("jobs.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("step_id", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, nullable=True),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("exit_code", sa.Text, nullable=True),
        sa.Column("ntasks", sa.Integer, nullable=True),
        sa.Column("node_list", sa.Text, nullable=True),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_time", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("job_steps")
    for column in reversed(COLUMNS):
        op.drop_column("jobs", column.name)
