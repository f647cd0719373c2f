"""依赖按被依赖作业的开始/结束复查：jobs 增加 dependency_ids 与三个部分索引；
队列索引 ix_jobs_queue 以分区打头（调度器按分区各读队首）。

Revision ID: 0004_queue
Revises: 0003_auth
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

revision = "0004_queue"
down_revision = "0003_auth"
branch_labels = None
depends_on = None

RUNNABLE = "state = 'PENDING' AND NOT held AND dependency_state IN ('NONE', 'SATISFIED')"
# 与 models.DEPENDENT 相同：不提 state，见那里的说明
DEPENDENT = "dependency_state = 'WAITING' AND end_time IS NULL"


def upgrade() -> None:
    op.add_column("jobs", sa.Column("dependency_ids", ARRAY(sa.BigInteger), nullable=True))
    # 依赖写法里的数字都是作业号（类型名与 singleton 不含数字）
    op.execute(
        "UPDATE jobs SET dependency_ids = ARRAY(SELECT DISTINCT m[1]::bigint "
        "FROM regexp_matches(dependency, '(\\d+)', 'g') AS m ORDER BY 1) "
        "WHERE dependency IS NOT NULL"
    )
    op.create_index(
        "ix_jobs_dependency_targets",
        "jobs",
        ["dependency_ids"],
        postgresql_using="gin",
        postgresql_where=sa.text(DEPENDENT),
        postgresql_with={"fastupdate": "off"},
    )
    op.create_index(
        "ix_jobs_singleton_waiting",
        "jobs",
        ["account", "name"],
        postgresql_where=sa.text(f"{DEPENDENT} AND dependency LIKE '%singleton%'"),
    )
    op.create_index(
        "ix_jobs_changed",
        "jobs",
        [sa.text("COALESCE(end_time, start_time)")],
        postgresql_where=sa.text("end_time IS NOT NULL OR start_time IS NOT NULL"),
    )
    # 调度器按分区各读队首：一个分区的长队挡不住别的分区
    _queue_index(["partition", "queue_rank", "id"])


def downgrade() -> None:
    _queue_index(["queue_rank", "id"])
    for index in ("ix_jobs_changed", "ix_jobs_singleton_waiting", "ix_jobs_dependency_targets"):
        op.drop_index(index, table_name="jobs")
    op.drop_column("jobs", "dependency_ids")


def _queue_index(columns: list[str]) -> None:
    op.drop_index("ix_jobs_queue", table_name="jobs")
    op.create_index("ix_jobs_queue", "jobs", columns, postgresql_where=sa.text(RUNNABLE))
