"""安全第二轮：/metrics 用的作业计数（job_stats 与触发器），按账户过滤的查询用的索引，
网页的一次性登录码（login_codes）。

Revision ID: 0005_security
Revises: 0004_queue
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_security"
down_revision = "0004_queue"
branch_labels = None
depends_on = None

# 与 conductor/stats.py 的 LATENCY_BUCKETS 相同（秒）
BUCKETS = "0.1,0.25,0.5,1,2.5,5,10,30,60,300,900,3600,14400"

# 一组作业行的计数：sign 为 1（插入）或 -1（删除）
_ROWS_SQL = """
    INSERT INTO job_stats (kind, label, n, total)
    SELECT 'state', state, {sign} * COUNT(*), 0 FROM {rows} GROUP BY state
    UNION ALL
    SELECT 'started', job_stats_bucket(lat), {sign} * COUNT(*), {sign} * SUM(lat) FROM (
        SELECT EXTRACT(EPOCH FROM (start_time - submit_time))::float8 AS lat FROM {rows}
        WHERE start_time IS NOT NULL AND submit_time IS NOT NULL
    ) AS started
    GROUP BY 2;
"""


def upgrade() -> None:
    op.create_table(
        "login_codes",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_login_codes_code_hash", "login_codes", ["code_hash"], unique=True)
    # 账户令牌的 /jobs（最新在前、按 id 翻页，可按状态过滤）与 /dashboard 只读本账户的行
    op.create_index("ix_jobs_account", "jobs", ["account", "id"])
    op.create_index("ix_jobs_account_state", "jobs", ["account", "state", "id"])
    op.create_table(
        "job_stats",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("label", sa.String(32), nullable=False),
        sa.Column("n", sa.BigInteger, nullable=False),
        sa.Column("total", sa.Float, nullable=False, server_default="0"),
    )
    op.execute(
        f"""
        CREATE FUNCTION job_stats_bucket(lat float8) RETURNS text LANGUAGE sql IMMUTABLE AS $$
            SELECT COALESCE(
                (SELECT b.le::text AS bound FROM unnest(ARRAY[{BUCKETS}]::float8[]) AS b(le)
                 WHERE lat <= b.le ORDER BY b.le LIMIT 1),
                '+Inf')
        $$
        """
    )
    # 插入与删除按语句计数（一个 1001 个任务的数组只写几行）；改状态、开始按行计数，
    # 只在这几列真的变化时触发。触发器只插入新行、从不更新计数行：并发的事务互不等待
    op.execute(
        "CREATE FUNCTION job_stats_insert() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        + _ROWS_SQL.format(sign=1, rows="new_rows")
        + " RETURN NULL; END $$"
    )
    op.execute(
        "CREATE FUNCTION job_stats_delete() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        + _ROWS_SQL.format(sign=-1, rows="old_rows")
        + " RETURN NULL; END $$"
    )
    op.execute(
        """
        CREATE FUNCTION job_stats_update() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE lat float8;
        BEGIN
            IF OLD.state IS DISTINCT FROM NEW.state THEN
                INSERT INTO job_stats (kind, label, n, total)
                VALUES ('state', OLD.state, -1, 0), ('state', NEW.state, 1, 0);
            END IF;
            IF OLD.start_time IS DISTINCT FROM NEW.start_time
               OR OLD.submit_time IS DISTINCT FROM NEW.submit_time THEN
                IF OLD.start_time IS NOT NULL AND OLD.submit_time IS NOT NULL THEN
                    lat := EXTRACT(EPOCH FROM (OLD.start_time - OLD.submit_time));
                    INSERT INTO job_stats (kind, label, n, total)
                    VALUES ('started', job_stats_bucket(lat), -1, -lat);
                END IF;
                IF NEW.start_time IS NOT NULL AND NEW.submit_time IS NOT NULL THEN
                    lat := EXTRACT(EPOCH FROM (NEW.start_time - NEW.submit_time));
                    INSERT INTO job_stats (kind, label, n, total)
                    VALUES ('started', job_stats_bucket(lat), 1, lat);
                END IF;
            END IF;
            RETURN NULL;
        END $$
        """
    )
    # 已有的作业：先按现状计一次（迁移在服务启动、接受请求之前执行）
    op.execute(_ROWS_SQL.format(sign=1, rows="jobs"))
    op.execute(
        "CREATE TRIGGER jobs_stats_insert AFTER INSERT ON jobs "
        "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION job_stats_insert()"
    )
    op.execute(
        "CREATE TRIGGER jobs_stats_delete AFTER DELETE ON jobs "
        "REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION job_stats_delete()"
    )
    op.execute(
        "CREATE TRIGGER jobs_stats_update AFTER UPDATE OF state, start_time, submit_time ON jobs "
        "FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state "
        "OR OLD.start_time IS DISTINCT FROM NEW.start_time "
        "OR OLD.submit_time IS DISTINCT FROM NEW.submit_time) "
        "EXECUTE FUNCTION job_stats_update()"
    )


def downgrade() -> None:
    for name in ("jobs_stats_update", "jobs_stats_delete", "jobs_stats_insert"):
        op.execute(f"DROP TRIGGER {name} ON jobs")
    for name in ("job_stats_update", "job_stats_delete", "job_stats_insert"):
        op.execute(f"DROP FUNCTION {name}()")
    op.execute("DROP FUNCTION job_stats_bucket(float8)")
    op.drop_table("job_stats")
    op.drop_index("ix_jobs_account_state", table_name="jobs")
    op.drop_index("ix_jobs_account", table_name="jobs")
    op.drop_table("login_codes")
