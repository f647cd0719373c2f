"""直接写进数据库的作业行：大队列的测试与基准不经 API 造出成千上万个排队作业。"""

from __future__ import annotations

from sqlalchemy import Connection, text


def insert_pending(conn: Connection, n: int, work_dir: str = "/tmp") -> None:
    """直接在数据库里插入 n 个排队作业（脚本 true，1 CPU、10 MiB）：大队列的测试与基准共用。"""
    conn.execute(
        text(
            "INSERT INTO jobs (name, account, partition, script, environment, work_dir, "
            "stdout_path, stderr_path, ntasks_per_node, cpus_per_task, cpus, memory_bytes, "
            "exclusive, state, submit_time, eligible_time, data_source) "
            "SELECT 'queued', 'bench', 'default', 'true', '{}', :wd, '/dev/null', '/dev/null', "
            "1, 1, 1, 10485760, false, 'PENDING', now(), now(), 'API' "
            "FROM generate_series(1, :n)"
        ),
        {"n": n, "wd": work_dir},
    )


def insert_job(
    conn: Connection, script: str = "true", work_dir: str = "/tmp", **columns: object
) -> int:
    """直接在数据库里写一个作业行（默认排队、1 CPU、10 MiB），返回 id；columns 覆盖任意列，
    值按 SQL 表达式写入（字符串要自带引号）。故障测试用它写出 API 不会写出的行。"""
    values: dict[str, object] = {
        "name": "'raw'",
        "account": "'test'",
        "partition": "'default'",
        "script": ":script",
        "environment": "'{}'",
        "work_dir": ":wd",
        "stdout_path": ":out",
        "stderr_path": "'/dev/null'",
        "ntasks_per_node": "1",
        "cpus_per_task": "1",
        "cpus": "1",
        "memory_bytes": "10485760",
        "exclusive": "false",
        "state": "'PENDING'",
        "submit_time": "now()",
        "eligible_time": "now()",
        "data_source": "'API'",
    } | columns
    return conn.execute(
        text(
            f"INSERT INTO jobs ({', '.join(values)}) "
            f"VALUES ({', '.join(str(v) for v in values.values())}) RETURNING id"
        ),
        {"script": script, "wd": work_dir, "out": f"{work_dir}/raw.out"},
    ).scalar_one()
