"""排空的节点（scontrol update NodeName=… State=DRAIN / conductor drain）：node_drains 表。

按节点名记（同 Slurm 的 NodeName）：Ray 节点重启后 id 会变，名字不变，排空照旧有效，直到 RESUME。

Revision ID: 0010_node_drains
Revises: 0009_script_args
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_node_drains"
down_revision = "0009_script_args"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "node_drains",
        sa.Column("node_name", sa.Text, primary_key=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("drained_by", sa.Text, nullable=False),
        sa.Column(
            "since", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )


def downgrade() -> None:
    op.drop_table("node_drains")
