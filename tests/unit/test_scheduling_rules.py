"""调度的纯规则：数组写法与文件名展开、依赖的解析与判定、分区与时限、账户上限、优先级排序键。"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from conductor.account_limits import AccountLimit, blocking_reason, limit_for
from conductor.arrays import check_filename, expand_filename, parse_array, parse_job_ref
from conductor.dependencies import DepState, Target, evaluate, parse_dependency
from conductor.errors import InvalidJobRequest
from conductor.partitions import PartitionConfig, PartitionTable
from conductor.priority import queue_rank
from conductor.states import JobState

S = JobState


def test_parse_array_forms() -> None:
    assert parse_array("0-3", 100).indices == (0, 1, 2, 3)
    assert parse_array("1,3,5-7", 100).indices == (1, 3, 5, 6, 7)
    assert parse_array("0-15:4", 100).indices == (0, 4, 8, 12)
    spec = parse_array("0-99%10", 1000)
    assert spec.count == 100 and spec.max_running == 10


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("5-1", "结束须不小于开始"),
        ("a-b", "无效"),
        ("0-9%0", "%N"),
        ("0-2000", "最大为"),
        ("0-99", "超过上限"),
        ("1,,2", "无效"),
    ],
)
def test_parse_array_errors_name_the_problem(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_array(value, 50)


def test_expand_filename() -> None:
    out = expand_filename(
        "/o/%x-%A_%a.%u.%j.100%%", job_id=7, name="sim", account="alice",
        array_job_id=5, array_task_id=2,
    )  # fmt: skip
    assert out == "/o/sim-5_2.alice.7.100%"
    assert expand_filename("slurm-%j-%A-%a-%q", job_id=9, name="n", account="a") == (
        "slurm-9-9-4294967294-%q"
    )
    # %J 是“作业号.步号”；批处理脚本的输出只写作业号（dask-jobqueue 的 -o dask-worker-%J.out 靠它）
    assert expand_filename("w-%J.out", job_id=9, name="n", account="a") == "w-9.out"


def test_parse_job_ref() -> None:
    assert parse_job_ref("12") == (12, None)
    assert parse_job_ref("12_3") == (12, 3)
    with pytest.raises(ValueError, match="作业号无效"):
        parse_job_ref("12_")


def test_parse_dependency() -> None:
    dep = parse_dependency("afterok:12:13,afterany:14")
    assert str(dep) == "afterok:12:13,afterany:14"
    assert dep.job_ids == {12, 13, 14} and not dep.any_of
    assert parse_dependency("afterok:1?afternotok:2").any_of
    assert str(parse_dependency("singleton")) == "singleton"
    for bad in ("afterok", "before:1", "afterok:1,afterany:2?after:3", "afterok:x"):
        with pytest.raises(ValueError, match="依赖"):
            parse_dependency(bad)


def _t(*states: JobState) -> Target:
    return Target(states)


@pytest.mark.parametrize(
    ("spec", "target", "expected"),
    [
        ("after:1", _t(S.PENDING), DepState.WAITING),
        ("after:1", _t(S.RUNNING), DepState.SATISFIED),
        ("afterany:1", _t(S.RUNNING), DepState.WAITING),
        ("afterany:1", _t(S.FAILED), DepState.SATISFIED),
        ("afterok:1", _t(S.COMPLETED), DepState.SATISFIED),
        ("afterok:1", _t(S.FAILED), DepState.NEVER),
        ("afterok:1", _t(S.CANCELLED), DepState.NEVER),
        ("afternotok:1", _t(S.TIMEOUT), DepState.SATISFIED),
        ("afternotok:1", _t(S.COMPLETED), DepState.NEVER),
        ("afternotok:1", _t(S.RUNNING), DepState.WAITING),
        # 数组：全部任务
        ("afterok:1", _t(S.COMPLETED, S.RUNNING), DepState.WAITING),
        ("afterok:1", _t(S.FAILED, S.RUNNING), DepState.NEVER),
        ("afterok:1", _t(S.COMPLETED, S.COMPLETED), DepState.SATISFIED),
        ("afterany:1", _t(S.COMPLETED, S.NODE_FAIL), DepState.SATISFIED),
    ],
)
def test_evaluate_single(spec: str, target: Target, expected: DepState) -> None:
    assert evaluate(parse_dependency(spec), {1: target}) is expected


def test_evaluate_combinations() -> None:
    targets = {1: _t(S.COMPLETED), 2: _t(S.RUNNING), 3: _t(S.FAILED)}
    assert evaluate(parse_dependency("afterok:1:2"), targets) is DepState.WAITING
    assert evaluate(parse_dependency("afterok:1,afterany:3"), targets) is DepState.SATISFIED
    assert evaluate(parse_dependency("afterok:1:3"), targets) is DepState.NEVER
    assert evaluate(parse_dependency("afterok:3?afterok:2"), targets) is DepState.WAITING
    assert evaluate(parse_dependency("afterok:3?afterok:1"), targets) is DepState.SATISFIED
    assert evaluate(parse_dependency("afterok:3?afterok:9"), targets) is DepState.NEVER
    assert evaluate(parse_dependency("afterok:9"), {}) is DepState.NEVER
    assert evaluate(parse_dependency("singleton"), {}, singleton_busy=True) is DepState.WAITING
    assert evaluate(parse_dependency("singleton"), {}) is DepState.SATISFIED


def _table() -> PartitionTable:
    return PartitionTable.from_config(
        {
            "batch": PartitionConfig(default=True, default_time="1:00:00", max_time="1-00:00:00"),
            "debug": PartitionConfig(max_time=30),
            "long": PartitionConfig(),
        },
        "ignored",
    )


def test_partition_lookup_and_time_limits() -> None:
    table = _table()
    assert table.get(None).name == "batch"
    with pytest.raises(InvalidJobRequest, match="未知分区：'gpu'.*batch、debug、long"):
        table.get("gpu")
    batch, debug, long = (table.get(n) for n in ("batch", "debug", "long"))
    assert table.time_limit(batch, None, given=False) == 3600
    assert table.time_limit(debug, None, given=False) == 1800  # 无默认值时取上限
    assert table.time_limit(long, None, given=False) is None
    assert table.time_limit(debug, 600, given=True) == 600
    with pytest.raises(InvalidJobRequest, match="超过分区 debug 的上限 0:30:00"):
        table.time_limit(debug, 3600, given=True)
    with pytest.raises(InvalidJobRequest, match="UNLIMITED"):
        table.time_limit(debug, None, given=True)
    assert table.exceeds_max("debug", 3600) and not table.exceeds_max("long", None)


def test_node_partitions_from_labels() -> None:
    table = _table()
    assert table.node_partitions({}) == {"batch"}
    assert table.node_partitions({"conductor.partition": "debug, long"}) == {"debug", "long"}
    assert table.node_partitions({"conductor.partition": "nope"}) == frozenset()
    # ray up 配置里常用自定义资源 partition:<名> 声明
    assert table.node_partitions({}, ["CPU", "partition:debug", "memory"]) == {"debug"}
    both = table.node_partitions({"conductor.partition": "long"}, ["partition:debug"])
    assert both == {"debug", "long"}


def test_default_partition_without_config() -> None:
    table = PartitionTable.from_config({}, "default")
    assert table.names == ["default"]
    assert table.time_limit(table.default, None, given=False) is None


def test_partition_config_needs_exactly_one_default() -> None:
    with pytest.raises(ValueError, match="恰好有一个默认分区"):
        PartitionTable.from_config({"a": PartitionConfig(), "b": PartitionConfig()}, "x")


def test_account_limits() -> None:
    limits = {"alice": AccountLimit(max_running_jobs=1), "*": AccountLimit(max_cpus=4)}
    assert limit_for(limits, "alice").max_running_jobs == 1
    assert limit_for(limits, "bob").max_cpus == 4
    assert limit_for({}, "bob") == AccountLimit()
    assert blocking_reason(limits["alice"], 1, 0, 1) == "AssocMaxJobsLimit"
    assert blocking_reason(limits["*"], 0, 3, 2) == "AssocGrpCpuLimit"
    assert blocking_reason(limits["*"], 0, 2, 2) is None


def test_queue_rank_orders_by_priority_plus_age() -> None:
    """priority 每高 1 相当于早提交一分钟；顺序与观察时刻无关。"""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    early_low = queue_rank(0, t0)
    late_high = queue_rank(10, t0 + timedelta(minutes=5))
    much_later_high = queue_rank(10, t0 + timedelta(minutes=20))
    assert late_high < early_low < much_later_high
    assert queue_rank(0, t0) < queue_rank(0, t0 + timedelta(seconds=1))


def test_filename_pad_width_is_bounded() -> None:
    assert expand_filename("%10j", job_id=7, name="n", account="a") == "0000000007"
    for pattern in ("%11j", "%2000000000j", "%99999999999999999999j", "%" + "9" * 5000 + "a"):
        with pytest.raises(ValueError, match="补零宽度"):
            check_filename(pattern)
        with pytest.raises(ValueError, match="补零宽度"):
            expand_filename(pattern, job_id=7, name="n", account="a")
