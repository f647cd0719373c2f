"""命令行的作业步显示（conductor/client/rows.py）：history 在作业之下列出 12.batch、12.0…，同 sacct。"""

from __future__ import annotations

from conductor.client.rows import history_rows, step_rows

JOB = {
    "job_id": 12,
    "name": "mpi",
    "account": "a",
    "partition": "default",
    "state": "COMPLETED",
    "elapsed_time": "0-00:00:05",
    "exit_code": "0:0",
    "start_time": "2025-11-07T10:00:00Z",
    "end_time": "2025-11-07T10:00:05Z",
}
STEPS = [
    {"step_id": "12.batch", "name": "batch", "state": "COMPLETED", "exit_code": "0:0",
     "ntasks": 1, "node_list": "n1", "start_time": "s", "end_time": "e"},
    {"step_id": "12.0", "name": "hostname", "state": "FAILED", "exit_code": "1:0",
     "ntasks": 4, "node_list": "n[1-2]", "start_time": "s", "end_time": "e"},
]  # fmt: skip


def plain(rows: list[tuple]) -> list[list[str]]:
    return [[cell.plain for cell in row] for row in rows]


def test_history_lists_each_jobs_steps_below_it() -> None:
    rows = plain(history_rows([{**JOB, "steps": STEPS}, {**JOB, "job_id": 11}]))
    assert [r[0] for r in rows] == ["12", "12.batch", "12.0", "11"]
    assert rows[2] == ["12.0", "hostname", "", "", "FAILED", "", "1:0", "s", "e"]
    # 旧服务端没有 steps 字段：只有作业的行
    assert len(history_rows([JOB])) == 1


def test_step_rows_show_tasks_and_nodes() -> None:
    assert plain(step_rows(STEPS))[1] == [
        "12.0",
        "hostname",
        "FAILED",
        "1:0",
        "4",
        "n[1-2]",
        "s",
        "e",
    ]
