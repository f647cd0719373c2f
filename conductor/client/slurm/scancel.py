"""scancel：取消作业（POST /jobs/cancel/{id}），或用 -s 只发信号（POST /jobs/{id}/signal）。

作业号可写 12、12_3、12_[1-3]（逐个任务）、12_*（整个数组），也可以只给过滤条件
（-u、-n、-t、-p、-A、--me）。找不到或已结束的作业按 Slurm 22.05 报
`scancel: error: Kill job error on job id 99: Invalid job id specified`，退出码 1。
"""

from __future__ import annotations

import signal as signals
import sys
from typing import Any

from conductor.client.slurm.grammar import (
    ACTIVE_STATES,
    GrammarError,
    SlurmParser,
    current_user,
    expand_job_ids,
    owned_by,
    parse_states,
    split_list,
)
from conductor.client.slurm.http import Api, ApiError, Unreachable, connect, die, entry, error

PROG = "scancel"

HELP = """\
用法：scancel [选项...] [作业号[_下标]...]

取消作业，或用 -s 向作业发信号而不取消。

  -s, --signal=信号         只发信号（如 USR1、SIGUSR1、10），不取消
  -b, --batch               信号只发给批处理脚本的 shell（及其进程组）
  -f, --full                信号发给作业的全部进程（默认）
  -n, --name=作业名         只取消这个名字的作业
  -u, --user=用户           只取消这个用户的作业
      --me                  只取消自己的作业
  -t, --state=状态          只取消这些状态的作业（PENDING、RUNNING…）
  -p, --partition=分区      只取消这个分区的作业
  -A, --account=账户        只取消这个账户的作业
  -Q, --quiet               不报告找不到的作业
  -v, --verbose             报告每个作业
      --help                显示本帮助
"""


def signal_name(text: str) -> str:
    """信号的写法（USR1、SIGUSR1、10）→ 不带 SIG 前缀的名字；无效时抛 GrammarError。"""
    raw = text.strip().upper()
    if raw.isdigit():
        try:
            return signals.Signals(int(raw)).name.removeprefix("SIG")
        except ValueError:
            raise GrammarError(f"Invalid job signal: {text}") from None
    name = raw.removeprefix("SIG")
    if not hasattr(signals, "SIG" + name) or name.startswith("_") or "_" in name:
        raise GrammarError(f"Invalid job signal: {text}")
    return name


def _parser() -> SlurmParser:
    p = SlurmParser(PROG, "scancel [选项...] [作业号...]")
    p.add_argument("jobs", nargs="*")
    p.add_argument("-s", "--signal")
    p.add_argument("-b", "--batch", action="store_true")
    p.add_argument("-f", "--full", action="store_true")
    p.add_argument("-n", "--name", "--jobname", dest="name")
    p.add_argument("-u", "--user")
    p.add_argument("--me", action="store_true")
    p.add_argument("-t", "--state")
    p.add_argument("-p", "--partition")
    p.add_argument("-A", "--account")
    p.add_argument("-Q", "--quiet", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _ref_of(item: dict[str, Any]) -> str:
    """列表项 → 只指它自己的引用：数组任务写 12_3（数组主作业号会指整个数组）。"""
    if item.get("array_job_id") is not None and item.get("array_task_id") is not None:
        return f"{item['array_job_id']}_{item['array_task_id']}"
    return str(item["job_id"])


def _matches(item: dict[str, Any], ref: str) -> bool:
    array_job = item.get("array_job_id")
    if "_" in ref:
        base, idx = ref.split("_", 1)
        return str(array_job) == base and str(item.get("array_task_id")) == idx
    return str(item["job_id"]) == ref or (array_job is not None and str(array_job) == ref)


def _act(api: Api, ref: str, sig: str | None, batch: bool) -> None:
    if sig is None:
        api.request("POST", f"/jobs/cancel/{ref}")
    else:
        api.request("POST", f"/jobs/{ref}/signal", body={"signal": sig, "batch": batch})


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse(sys.argv[1:] if argv is None else list(argv), HELP)
    try:
        refs = [r for v in args.jobs for r in expand_job_ids(v)]
        states = parse_states(args.state) if args.state else None
        sig = signal_name(args.signal) if args.signal else None
    except GrammarError as exc:
        die(PROG, str(exc))
    users = set(split_list(args.user)) if args.user else set()
    if args.me:
        users.add(current_user())
    filters = bool(users or states or args.name or args.partition or args.account)
    if not refs and not filters:
        die(PROG, "No job identification provided")
    rc = 0
    with connect(PROG) as api:
        try:
            query: list[tuple[str, Any]] = [("state", s) for s in ("PENDING", "RUNNING")]
            active = [
                j
                for j in api.jobs_for(refs, query)
                if j["state"] in ACTIVE_STATES
                and (states is None or j["state"] in states)
                and (not users or owned_by(j, users))
                and (not args.name or j.get("name") == args.name)
                and (not args.partition or j.get("partition") in split_list(args.partition))
                and (not args.account or j.get("account") in split_list(args.account))
            ]
            targets: list[str] = []
            for ref in refs:
                if any(_matches(j, ref) for j in active):
                    targets.append(ref)
                else:
                    rc = 1
                    if not args.quiet:
                        error(PROG, f"Kill job error on job id {ref}: Invalid job id specified")
            if not refs:
                targets = sorted({_ref_of(j) for j in active})
            for ref in targets:
                try:
                    _act(api, ref, sig, args.batch)
                    if args.verbose:
                        what = f"Signal {sig} to" if sig else "Terminating"
                        sys.stderr.write(f"scancel: {what} job {ref}\n")
                except ApiError as exc:
                    rc = 1
                    if exc.status == 404 and exc.detail == "Not Found":
                        die(PROG, "服务端不支持向作业发信号（缺少 POST /jobs/{id}/signal）")
                    detail = "Invalid job id specified" if exc.status == 404 else exc.detail
                    error(PROG, f"Kill job error on job id {ref}: {detail}")
        except ApiError as exc:
            die(PROG, exc.detail)
        except Unreachable as exc:
            die(PROG, str(exc))
    return rc


def run() -> None:
    """控制台脚本 `scancel` 的入口。"""
    entry(main)


if __name__ == "__main__":
    run()
