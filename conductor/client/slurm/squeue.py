"""squeue：列出排队与运行中的作业，格式同 Slurm（conductor/slurm_output.py 的 format_squeue）。

不给 -t 时只列没有结束的作业（PENDING、RUNNING…），同 Slurm；-t 列出已结束的状态时，
只列最近 MinJobAge（Slurm 默认 300 秒）内结束的：Slurm 的控制器只在内存里保留这么久。
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from conductor import slurm_output
from conductor.client.slurm.grammar import (
    ACTIVE_STATES,
    FINISHED_STATES,
    GrammarError,
    SlurmParser,
    current_user,
    expand_job_ids,
    owned_by,
    parse_states,
    split_list,
)
from conductor.client.slurm.http import ApiError, Unreachable, connect, die, entry, perror
from conductor.client.slurm.records import normalize

PROG = "squeue"
# GET /jobs 的 state 参数认得的状态（conductor/states.py）
SERVER_STATES = frozenset(
    {"PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"}
)
MIN_JOB_AGE = timedelta(seconds=300)  # Slurm 的 MinJobAge 默认值
# src/squeue/squeue.c 的 -l 长格式
LONG_FORMAT = "%.18i %.9P %.8j %.8u %.8T %.10M %.9l %.6D %R"
# -O 的字段名 → -o 的字段字母（src/squeue/opts.c 的长格式表中 Conductor 支持的部分）
LONG_NAMES = {
    "account": "a",
    "arrayjobid": "F",
    "arraytaskid": "K",
    "jobarrayid": "i",
    "jobid": "i",
    "name": "j",
    "nodelist": "N",
    "numcpus": "C",
    "numnodes": "D",
    "partition": "P",
    "prioritylong": "Q",
    "reason": "r",
    "reasonlist": "R",
    "starttime": "S",
    "state": "T",
    "statecompact": "t",
    "submittime": "V",
    "timeleft": "L",
    "timelimit": "l",
    "timeused": "M",
    "tres-per-node": "b",
    "username": "u",
    "user": "u",
}

HELP = """\
用法：squeue [选项...]

列出作业（默认只列排队与运行中的），输出格式同 Slurm。

  -h, --noheader            不输出表头
  -o, --format=格式         %i %j %T %t %M %l %D %R %u %P %a %C %b %r %S %V %Q %A %F %K %L %N
  -O, --Format=字段[:[.]宽度],…  长字段名，如 jobid,name:30,state
  -l, --long                长格式
  -j, --jobs=作业号,…       只列这些作业（12、12_3、12_[1-3]）
  -u, --user=用户,…         只列这些用户的作业
      --me                  只列自己的作业
  -t, --states=状态,…       状态全名或缩写（PD、R、CD…），all 为全部
  -p, --partition=分区,…    只列这些分区
  -A, --account=账户,…      只列这些账户
  -n, --name=作业名,…       只列这些作业名
  -r, --array               数组任务各占一行（默认把待排的任务合成一行 12_[3-5]）
  -a, --all                 接受（Conductor 没有隐藏分区）
      --help                显示本帮助
"""


def long_format(spec: str) -> str:
    """-O 的 字段[:[.]宽度[后缀]],… → -o 的格式串；不写宽度为 20（同 Slurm）。"""
    parts = []
    for item in split_list(spec):
        name, _, size = item.partition(":")
        letter = LONG_NAMES.get(name.strip().lower())
        if letter is None:
            raise GrammarError(f"Invalid job format specification: {name}")
        right = size.startswith(".")
        digits = size.lstrip(".")
        width = ""
        while digits[:1].isdigit():
            width, digits = width + digits[0], digits[1:]
        parts.append(f"%{'.' if right else ''}{width or 20}{letter}{digits}")
    return "".join(parts)


def _parser() -> SlurmParser:
    p = SlurmParser(PROG, "squeue [选项...]")
    p.add_argument("-h", "--noheader", action="store_true")
    p.add_argument("-o", "--format")
    p.add_argument("-O", "--Format", dest="long_format")
    p.add_argument("-l", "--long", action="store_true")
    p.add_argument("-j", "--jobs", action="append", default=[])
    p.add_argument("-u", "--user", action="append", default=[])
    p.add_argument("--me", action="store_true")
    p.add_argument("-t", "--states")
    p.add_argument("-p", "--partition", action="append", default=[])
    p.add_argument("-A", "--account", action="append", default=[])
    p.add_argument("-n", "--name", action="append", default=[])
    p.add_argument("-r", "--array", action="store_true")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _flatten(values: Iterable[str]) -> list[str]:
    return [item for v in values for item in split_list(v)]


def _finished_recently(item: dict[str, Any], now: datetime) -> bool:
    end = item.get("end_time")
    if not end:
        return True
    ended = datetime.fromisoformat(str(end))
    if ended.utcoffset() is None:
        ended = ended.replace(tzinfo=UTC)
    return now - ended <= MIN_JOB_AGE


def _ref_matches(item: dict[str, Any], refs: list[str]) -> bool:
    job_id = str(item["job_id"])
    array_job = item.get("array_job_id")
    task = item.get("array_task_id")
    for ref in refs:
        if "_" in ref:
            base, idx = ref.split("_", 1)
            if array_job is not None and str(array_job) == base and str(task) == idx:
                return True
        elif ref == job_id or (array_job is not None and str(array_job) == ref):
            return True
    return False


def sort_key(item: dict[str, Any]) -> tuple[str, str, int, int]:
    """Slurm 的默认排序 "P,t,-p"：分区，状态缩写，优先级从高到低（同分时按作业号）。"""
    state = str(item["state"])
    return (
        item.get("partition") or "",
        slurm_output._STATE_COMPACT.get(state, "?"),
        -int(item.get("priority") or 0),
        int(item["job_id"]),
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse(sys.argv[1:] if argv is None else list(argv), HELP)
    try:
        refs = [r for v in args.jobs for r in expand_job_ids(v)]
        all_states = args.states is not None and args.states.strip().lower() == "all"
        states = None if args.states is None or all_states else parse_states(args.states)
        fmt = args.format
        if args.long_format:
            fmt = long_format(args.long_format)
        elif fmt is None and args.long:
            fmt = LONG_FORMAT
        slurm_output.parse_squeue_format(fmt or slurm_output.DEFAULT_SQUEUE_FORMAT)
    except (GrammarError, ValueError) as exc:
        die(PROG, str(exc))
    users = set(_flatten(args.user))
    if args.me:
        users.add(current_user())
    partitions, accounts, names = (
        set(_flatten(args.partition)),
        set(_flatten(args.account)),
        set(_flatten(args.name)),
    )
    query: list[tuple[str, Any]] = []
    wanted = ACTIVE_STATES if states is None and not all_states else states
    if wanted is not None and wanted <= SERVER_STATES:
        # 只把服务端认得的状态交给它过滤；含别的状态（如 OOM）时全取回来在本地过滤
        query += [("state", s) for s in sorted(wanted)]
    if len(accounts) == 1:
        query.append(("account", next(iter(accounts))))
    if len(partitions) == 1:
        query.append(("partition", next(iter(partitions))))
    if len(names) == 1:
        query.append(("name", next(iter(names))))
    now = datetime.now(UTC)
    with connect(PROG) as api:
        try:
            items = [
                j
                for j in api.jobs_for(refs, query)
                if (wanted is None or j["state"] in wanted)
                and (j["state"] not in FINISHED_STATES or _finished_recently(j, now))
                and (not refs or _ref_matches(j, refs))
                and (not users or owned_by(j, users))
                and (not partitions or j.get("partition") in partitions)
                and (not accounts or j.get("account") in accounts)
                and (not names or j.get("name") in names)
            ]
            if not items and len(refs) == 1:
                # 只问一个作业而它不在（或早已结束）：同 slurm_load_job 的报错
                try:
                    body = api.request("GET", f"/jobs/query/{refs[0]}")
                    gone = body["state"] in FINISHED_STATES and not _finished_recently(
                        {"end_time": body["time"].get("end_time")}, now
                    )
                except ApiError as exc:
                    gone = exc.status == 404
                if gone:
                    perror("slurm_load_jobs error", "Invalid job id specified")
        except ApiError as exc:
            perror("slurm_load_jobs error", exc.detail)
        except Unreachable as exc:
            perror("slurm_load_jobs error", str(exc))
    items = [normalize(i) for i in items]
    if not args.array:
        items = slurm_output.fold_pending_arrays(items)
    items.sort(key=sort_key)
    tz = datetime.now().astimezone().tzinfo or UTC
    out = ""
    if args.long and not args.format and not args.long_format:
        out = datetime.now().strftime("%a %b %e %H:%M:%S %Y") + "\n"
    out += slurm_output.format_squeue(items, fmt, not args.noheader, now, tz)
    sys.stdout.write(out)
    return 0


def run() -> None:
    """控制台脚本 `squeue` 的入口。"""
    entry(main)


if __name__ == "__main__":
    run()
