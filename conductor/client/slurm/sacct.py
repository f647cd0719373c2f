"""sacct：作业与作业步的记账记录，格式同 Slurm（conductor/slurm_output.py 的 format_sacct）。

选择规则同 Slurm（src/common/slurmdb_defs.c 的 slurmdb_job_cond_def_start_end）：
- 给了 -j：-S 默认为纪元 0，-E 默认为现在；不限用户；
- 没给 -j 也没给 -s：-S 默认为今天 00:00（本地时区），-E 为现在；
- 给了 -s 没给 -j：-S 默认为现在，-E 默认同 -S；
- 没给 -a/-u/-j 时只列自己的作业。
作业在 [-S, -E] 里存在过（提交早于 -E，且未结束或结束不早于 -S）即列出；
给了 -s 时，已结束的状态看结束时间是否落在窗口内，排队与运行看当前状态。
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, tzinfo
from typing import Any

from conductor import slurm_output
from conductor.client.slurm.grammar import (
    FINISHED_STATES,
    GrammarError,
    SlurmParser,
    current_user,
    expand_job_ids,
    owned_by,
    parse_states,
    split_list,
)
from conductor.client.slurm.http import ApiError, Unreachable, connect, die, entry
from conductor.client.slurm.records import normalize
from conductor.slurm_time import SlurmTimeError, parse_slurm_time

PROG = "sacct"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

HELP = """\
用法：sacct [选项...]

作业与作业步的记账记录（默认只列自己今天的作业）。

  -j, --jobs=作业号,…       只列这些作业（12、12_3、12_[1-3]、12.batch）；可重复
  -o, --format=字段,…       字段（可写 名字%宽度），见 -e
  -e, --helpformat          列出支持的字段
  -b, --brief               只输出 JobID、State、ExitCode
  -P, --parsable2           以 | 分隔，行尾没有 |
  -p, --parsable            以 | 分隔，行尾有 |
  -n, --noheader            不输出表头
  -X, --allocations         只列作业，不列作业步
  -S, --starttime=时间      窗口起点（如 now-2days、2026-01-31T08:00、0131、midnight）
  -E, --endtime=时间        窗口终点
  -s, --state=状态,…        只列这些状态（CD、F、CA、TO、NF、OOM、PD、R…）
      --name=作业名,…       只列这些作业名
  -a, --allusers            列出所有用户的作业
  -u, --user=用户,…         只列这些用户的作业
      --me                  只列自己的作业
  -A, --accounts=账户,…     只列这些账户的作业
  -r, --partition=分区,…    只列这些分区的作业
      --help                显示本帮助
"""


def _parser() -> SlurmParser:
    p = SlurmParser(PROG, "sacct [选项...]")
    p.add_argument("-j", "--jobs", action="append", default=[])
    p.add_argument("-o", "--format", action="append", default=[])
    p.add_argument("-e", "--helpformat", action="store_true")
    p.add_argument("-b", "--brief", action="store_true")
    p.add_argument("-P", "--parsable2", action="store_true")
    p.add_argument("-p", "--parsable", action="store_true")
    p.add_argument("-n", "--noheader", action="store_true")
    p.add_argument("-X", "--allocations", action="store_true")
    p.add_argument("-S", "--starttime")
    p.add_argument("-E", "--endtime")
    p.add_argument("-s", "--state")
    p.add_argument("--name")
    p.add_argument("-a", "--allusers", action="store_true")
    p.add_argument("-u", "--user", "--uid", dest="user")
    p.add_argument("--me", action="store_true")
    p.add_argument("-A", "--accounts")
    p.add_argument("-r", "--partition")
    p.add_argument("-D", "--duplicates", action="store_true")
    p.add_argument("-L", "--allclusters", action="store_true")
    p.add_argument("--noconvert", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _ts(value: Any) -> datetime | None:
    if not value:
        return None
    dt = datetime.fromisoformat(str(value))
    return dt if dt.utcoffset() is not None else dt.replace(tzinfo=UTC)


def window(
    start: str | None,
    end: str | None,
    has_jobs: bool,
    has_states: bool,
    now: datetime,
    tz: tzinfo,
) -> tuple[datetime, datetime]:
    """-S/-E 与其默认值（slurmdb_job_cond_def_start_end）；写法无效抛 SlurmTimeError。"""
    s = parse_slurm_time(start, now, tz) if start else None
    e = parse_slurm_time(end, now, tz) if end else None
    if has_states:
        if s is None:
            s = EPOCH if has_jobs else now
        if e is None:
            e = s if start or not has_jobs else now
    elif has_jobs:
        s = s or EPOCH
    elif s is None:
        s = now.astimezone(tz).replace(hour=0, minute=0, second=0, microsecond=0)
    if e is None:
        e = now
    return s, e


def selected(
    item: dict[str, Any], start: datetime, end: datetime, states: frozenset[str] | None
) -> bool:
    """作业是否落在窗口里（见模块说明）。"""
    submit = _ts(item.get("submit_time")) or EPOCH
    finished = _ts(item.get("end_time"))
    state = str(item["state"])
    if states is not None:
        if state not in states:
            return False
        if state in FINISHED_STATES:
            return finished is not None and start <= finished <= end
        return submit <= end
    return submit <= end and (finished is None or finished >= start)


def _matches(item: dict[str, Any], refs: list[str]) -> bool:
    for ref in refs:
        ref = ref.split(".", 1)[0]
        if "_" in ref:
            base, idx = ref.split("_", 1)
            if str(item.get("array_job_id")) == base and str(item.get("array_task_id")) == idx:
                return True
        elif str(item["job_id"]) == ref or str(item.get("array_job_id")) == ref:
            return True
    return False


def _only_steps(item: dict[str, Any], refs: list[str]) -> dict[str, Any]:
    """-j 12.batch：只留所指的作业步（作业行照列）。"""
    wanted = {r.split(".", 1)[1] for r in refs if "." in r}
    if not wanted or any("." not in r and _matches(item, [r]) for r in refs):
        return item
    steps = [s for s in item.get("steps") or [] if str(s["step_id"]).split(".", 1)[-1] in wanted]
    return {**item, "steps": steps}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse(sys.argv[1:] if argv is None else list(argv), HELP)
    if args.helpformat:
        supported = list(slurm_output.SACCT_WIDTHS)
        for i in range(0, len(supported), 4):
            row = supported[i : i + 4]
            sys.stdout.write("".join(f"{n:<20}" for n in row).rstrip() + "\n")
        return 0
    now = datetime.now(UTC)
    tz = datetime.now().astimezone().tzinfo or UTC
    try:
        refs = [r for v in args.jobs for r in expand_job_ids(v, allow_step=True)]
        states = parse_states(args.state) if args.state else None
        start, end = window(args.starttime, args.endtime, bool(refs), states is not None, now, tz)
    except (GrammarError, SlurmTimeError) as exc:
        die(PROG, str(exc))
    if start > end:
        fmt = "%Y-%m-%dT%H:%M:%S"
        die(
            PROG,
            f"Start time ({start.astimezone(tz).strftime(fmt)}) requested is after end time "
            f"({end.astimezone(tz).strftime(fmt)}).",
        )
    fields: list[str] | None = (
        ["JobID", "State", "ExitCode"] if args.brief else (args.format or None)
    )
    users: set[str] = set()
    if args.user or args.me:
        users = set(split_list(args.user)) if args.user else set()
        if args.me:
            users.add(current_user())
    elif not args.allusers and not refs:
        users = {current_user()}
    names = set(split_list(args.name)) if args.name else set()
    accounts = set(split_list(args.accounts)) if args.accounts else set()
    partitions = set(split_list(args.partition)) if args.partition else set()
    query: list[tuple[str, Any]] = []
    with connect(PROG) as api:
        try:
            items = [
                normalize(j)
                for j in api.jobs_for(refs, query)
                if (not refs or _matches(j, refs))
                and selected(j, start, end, states)
                and (not names or j.get("name") in names)
                and (not accounts or j.get("account") in accounts)
                and (not partitions or j.get("partition") in partitions)
            ]
        except ApiError as exc:
            die(PROG, exc.detail)
        except Unreachable as exc:
            die(PROG, str(exc))
    items = [i for i in items if not users or owned_by(i, users)]
    items = [_only_steps(i, refs) for i in items]
    items.sort(key=lambda j: int(j["job_id"]))
    parsable: slurm_output.Parsable = "p2" if args.parsable2 else "p" if args.parsable else "none"
    try:
        text = slurm_output.format_sacct(
            items, fields, parsable, not args.noheader, args.allocations, now, tz
        )
    except ValueError as exc:
        die(PROG, str(exc))
    sys.stdout.write(text)
    return 0


def run() -> None:
    """控制台脚本 `sacct` 的入口。"""
    entry(main)


if __name__ == "__main__":
    run()
