"""议题 16 的资源请求：任务数、GPU 与其类型、其他通用资源、整节点内存、节点特性、
指定/排除的节点，作业环境用的 Slurm 写法，以及依赖节点名（%N）的输出文件名模式。

旧行取默认值即与原来的含义相同：1 个任务、没有 GPU 与通用资源、不限节点。

Revision ID: 0006_resources
Revises: 0005_security
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

revision = "0006_resources"
down_revision = "0005_security"
branch_labels = None
depends_on = None

COLUMNS: tuple[sa.Column, ...] = (
    # 旧行的任务数即每节点任务数（单节点）
    sa.Column("ntasks", sa.Integer, nullable=False, server_default="1"),
    sa.Column("gpus", sa.Integer, nullable=False, server_default="0"),
    sa.Column("gpu_type", sa.String(64), nullable=True),
    sa.Column("gres", JSONB, nullable=False, server_default="{}"),
    sa.Column("whole_node_memory", sa.Boolean, nullable=False, server_default="false"),
    sa.Column("constraints", sa.Text, nullable=True),
    sa.Column("required_nodes", ARRAY(sa.Text), nullable=False, server_default="{}"),
    sa.Column("excluded_nodes", ARRAY(sa.Text), nullable=False, server_default="{}"),
    sa.Column("slurm_request", JSONB, nullable=False, server_default="{}"),
    sa.Column("stdout_pattern", sa.String(2048), nullable=True),
    sa.Column("stderr_pattern", sa.String(2048), nullable=True),
)


def upgrade() -> None:
    for column in COLUMNS:
        op.add_column("jobs", column)
    op.execute("UPDATE jobs SET ntasks = ntasks_per_node WHERE ntasks_per_node <> 1")


def downgrade() -> None:
    for column in reversed(COLUMNS):
        op.drop_column("jobs", column.name)
