"""scontrol：show job/node/partition（Slurm 的 Key=Value 版式，见 conductor/slurm_show.py），
hold、release、requeue、update JobId=… TimeLimit=… Priority=… 与 update NodeName=… State=DRAIN|RESUME。

命令对应的 REST：show job → GET /jobs/query/{id}（再用 GET /jobs 的列表项补上用户、时限等）；
show node/partition → GET /dashboard 与 GET /partitions；hold/release → POST /jobs/{id}/hold|release；
requeue → POST /jobs/{id}/requeue；update → PATCH /jobs/{id}，节点的 → POST /nodes/{name}/drain|resume。
"""

from __future__ import annotations

import grp
import os
import pwd
import sys
from datetime import UTC, datetime
from typing import Any

from conductor import hostlist, slurm_show
from conductor.client.slurm.grammar import (
    FINISHED_STATES,
    GrammarError,
    expand_job_ids,
    split_list,
)
from conductor.client.slurm.http import Api, ApiError, Unreachable, connect, entry, perror
from conductor.client.slurm.records import memory_mb
from conductor.client.slurm.sinfo import load
from conductor.timefmt import parse_time_limit

PROG = "scontrol"
NO_VAL = 4294967294
MIN_JOB_AGE = 300  # Slurm 的 MinJobAge 默认值（秒）：show job 不带作业号时只列这么久内结束的

HELP = """\
用法：scontrol [-o] 命令 [参数...]

  show job [作业号]                作业详情（Key=Value）
  show node [节点名]               节点详情
  show partition [分区名]          分区详情
  show hostnames [主机列表]        主机列表展开为每行一个节点名（默认 $SLURM_JOB_NODELIST）
  show hostlist 节点名[,节点名...]  节点名压缩为主机列表
  hold 作业号[,作业号...]          挂起排队中的作业
  release 作业号[,作业号...]       放行挂起的作业
  requeue 作业号[,作业号...]       重新排队
  update JobId=作业号 TimeLimit=时限 Priority=N   修改排队中的作业
  update NodeName=节点[,节点...] State=DRAIN Reason=原因   排空节点（仅管理员）
  update NodeName=节点[,节点...] State=RESUME               恢复排空的节点（仅管理员）
  -o, --oneliner                   每条记录一行
  -d, --details                    接受（同默认）
  --help                           显示本帮助
"""


def _ts(value: Any) -> datetime | None:
    if not value:
        return None
    dt = datetime.fromisoformat(str(value))
    return dt if dt.utcoffset() is not None else dt.replace(tzinfo=UTC)


def _ids(name: str) -> tuple[str, int, str, int]:
    """用户名 → （用户名，uid，组名，gid）；本机没有这个用户时 uid/gid 为 NO_VAL。"""
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        return name, NO_VAL, name, NO_VAL
    try:
        group = grp.getgrgid(pw.pw_gid).gr_name
    except KeyError:
        group = str(pw.pw_gid)
    return name, pw.pw_uid, group, pw.pw_gid


def job_show(
    query: dict[str, Any], item: dict[str, Any] | None, now: datetime
) -> slurm_show.JobShow:
    """GET /jobs/query/{id} 的应答（与 GET /jobs 的列表项，若有）→ JobShow。"""
    detail = query.get("detail") or {}
    times = query.get("time") or {}
    item = item or {}
    user = str(item.get("user") or detail.get("user") or detail.get("account") or "")
    uname, uid, gname, gid = _ids(user)
    start, end = _ts(times.get("start_time")), _ts(times.get("end_time"))
    run = 0
    if start is not None:
        run = max(0, int(((end or now) - start).total_seconds()))
    if "time_limit_seconds" in item:
        limit = item["time_limit_seconds"]
    else:
        limit = parse_time_limit(times.get("limit_time") or "UNLIMITED")
    memory = memory_mb({**detail, **item})
    tres = detail.get("tres_alloc_str") or detail.get("tres_req_str")
    return slurm_show.JobShow(
        job_id=int(query["job_id"]),
        name=str(detail.get("job_name") or ""),
        user=uname,
        uid=uid,
        group=gname,
        gid=gid,
        account=str(detail.get("account") or ""),
        priority=int(detail.get("priority") or 0),
        state=str(query["state"]),
        reason=str(query.get("state_reason") or "None"),
        dependency=detail.get("dependency") or item.get("dependency"),
        requeue=bool(item.get("requeue", False)),
        restarts=int(item.get("restarts") or 0),
        exit_code=str(detail.get("exit_code") or "0:0"),
        run_seconds=run,
        time_limit=limit,
        submit_time=_ts(times.get("submit_time")),
        eligible_time=_ts(times.get("eligible_time")),
        start_time=start,
        end_time=end,
        partition=str(detail.get("partition") or ""),
        node_list=str(detail.get("node_list") or ""),
        required_nodes=",".join(detail.get("required_nodes") or []) or None,
        excluded_nodes=",".join(detail.get("excluded_nodes") or []) or None,
        batch_host=item.get("batch_host")
        or (str(detail.get("node_list") or "").split(",")[0] or None),
        num_nodes=int(detail.get("allocated_nodes") or item.get("nodes") or 1),
        num_cpus=int(detail.get("allocated_cpus") or 0),
        num_tasks=detail.get("ntasks"),
        cpus_per_task=item.get("cpus_per_task"),
        tres=tres,
        min_memory_mb=memory,
        features=detail.get("constraints"),
        work_dir=detail.get("work_dir") or item.get("work_dir"),
        stdout=item.get("stdout_path"),
        stderr=item.get("stderr_path"),
        array_job_id=detail.get("array_job_id"),
        array_task_id=detail.get("array_task_id"),
    )


def _recent(end: Any, now: datetime) -> bool:
    ended = _ts(end)
    return ended is None or (now - ended).total_seconds() <= MIN_JOB_AGE


def _list_item(api: Api, job_id: int) -> dict[str, Any] | None:
    for item in api.jobs([("job_id", job_id)]):
        if int(item["job_id"]) == job_id:
            return item
    return None


def _show_job(api: Api, target: str | None, one_liner: bool) -> int:
    now = datetime.now(UTC)
    tz = datetime.now().astimezone().tzinfo or UTC
    if target is None:
        # 同 slurmctld 内存里的作业：未结束的，与最近 MinJobAge（300 秒）内结束的
        items = [
            j
            for j in api.jobs([])
            if j["state"] not in FINISHED_STATES or _recent(j.get("end_time"), now)
        ]
        shows = []
        for item in sorted(items, key=lambda j: int(j["job_id"])):
            query = api.request("GET", f"/jobs/query/{item['job_id']}")
            shows.append(job_show(query, item, now))
        if not shows:
            sys.stdout.write("No jobs in the system\n")
            return 0
        sys.stdout.write(slurm_show.format_show_job(shows, tz, one_liner))
        return 0
    try:
        refs = expand_job_ids(target)
    except GrammarError:
        perror("slurm_load_jobs error", "Invalid job id specified")
    shows = []
    for ref in refs:
        try:
            query = api.request("GET", f"/jobs/query/{ref}")
        except ApiError as exc:
            if exc.status == 404:
                perror("slurm_load_jobs error", "Invalid job id specified")
            raise
        tasks = query.get("array_tasks")
        if tasks and "_" not in ref:
            # 数组主作业号：逐个任务显示（同 Slurm）
            for t in tasks:
                q = api.request("GET", f"/jobs/query/{t['job_id']}")
                shows.append(job_show(q, _list_item(api, int(t["job_id"])), now))
        else:
            shows.append(job_show(query, _list_item(api, int(query["job_id"])), now))
    sys.stdout.write(slurm_show.format_show_job(shows, tz, one_liner))
    return 0


def _show_nodes(api: Api, target: str | None, one_liner: bool, partitions: bool) -> int:
    parts, nodes = load(api)
    if partitions:
        chosen = [p for p in parts if target is None or p.name == target]
        if not chosen:
            perror("slurm_load_partitions error", "Invalid partition name specified")
        sys.stdout.write(slurm_show.format_show_partition(chosen, nodes, one_liner))
        return 0
    chosen_nodes = [n for n in nodes if target is None or n.name == target]
    if not chosen_nodes:
        sys.stdout.write(f"Node {target} not found\n")
        return 1
    sys.stdout.write(
        slurm_show.format_show_node(sorted(chosen_nodes, key=lambda n: n.name), one_liner)
    )
    return 0


def _job_action(api: Api, action: str, targets: list[str]) -> int:
    """hold/release/requeue：逐个作业调用；找不到的作业同 Slurm 报 “Invalid job id specified for job N”。"""
    if not targets:
        sys.stderr.write("Invalid job id specified\n")
        return 1
    rc = 0
    for raw in targets:
        for item in split_list(raw):
            try:
                refs = expand_job_ids(item)
            except GrammarError:
                sys.stderr.write(f"Invalid job id specified for job {item}\n")
                rc = 1
                continue
            for ref in refs:
                try:
                    api.request("POST", f"/jobs/{ref}/{action}")
                except ApiError as exc:
                    rc = 1
                    if exc.status == 404 and exc.detail == "Not Found":
                        sys.stderr.write(
                            f"scontrol: error: 服务端不支持 {action}（缺少 POST /jobs/{{id}}/{action}）\n"
                        )
                    elif exc.status == 404:
                        sys.stderr.write(f"Invalid job id specified for job {ref}\n")
                    else:
                        sys.stderr.write(f"{exc.detail} for job {ref}\n")
    return rc


# update 支持的键（大小写不敏感，同 Slurm 可写到能区分的前缀）→ PATCH 的字段
_UPDATE_KEYS = {"timelimit": "time_limit", "priority": "priority"}


# 节点更新里 Slurm 的出错原文（slurm_errno.c），按 HTTP 状态
_NODE_ERRORS = {
    403: "Access/permission denied",
    404: "Invalid node name specified",
    409: "Invalid node state specified",
}


def _update_node(api: Api, words: list[str]) -> int:
    """update NodeName=… State=DRAIN Reason=… | State=RESUME（UNDRAIN 同 RESUME）：逐个节点调用。"""
    names: list[str] = []
    state: str | None = None
    reason: str | None = None
    for word in words:
        key, eq, value = word.partition("=")
        low = key.lower()
        if not eq:
            sys.stderr.write(f"Invalid input: {word}\nRequest aborted\n")
            return 1
        if low in ("nodename", "node"):
            try:
                names = hostlist.expand(value)
            except ValueError:
                sys.stderr.write(f"Invalid node name specified: {value}\nRequest aborted\n")
                return 1
        elif low == "state":
            state = value.upper()
        elif low == "reason":
            reason = value
        else:
            sys.stderr.write(
                f"Update of this parameter is not supported: {word}\nRequest aborted\n"
            )
            return 1
    if state is None:
        sys.stderr.write("No changes specified\n")
        return 1
    if state in ("DRAIN", "FAIL") and not (reason or "").strip():
        sys.stderr.write("You must specify a reason when DRAINING a node\nRequest aborted\n")
        return 1
    if state not in ("DRAIN", "RESUME", "UNDRAIN"):
        # DOWN、FAIL、IDLE……：节点的存活由 Ray 判定，Conductor 只能排空与恢复
        sys.stderr.write(
            f"scontrol: error: 不支持 State={state}：Conductor 只能排空（DRAIN）与恢复（RESUME、UNDRAIN）节点，"
            "节点是否存活由 Ray 判定\nRequest aborted\n"
        )
        return 1
    rc = 0
    for name in names:
        try:
            if state == "DRAIN":
                api.request("POST", f"/nodes/{name}/drain", body={"reason": reason})
            else:
                api.request("POST", f"/nodes/{name}/resume")
        except ApiError as exc:
            rc = 1
            sys.stderr.write(f"slurm_update error: {_NODE_ERRORS.get(exc.status, exc.detail)}\n")
    return rc


def _update(api: Api, words: list[str]) -> int:
    if any(w.lower().startswith(("nodename=", "node=")) for w in words):
        return _update_node(api, words)
    job: str | None = None
    body: dict[str, Any] = {}
    for word in words:
        key, eq, value = word.partition("=")
        low = key.lower()
        if not eq:
            sys.stderr.write(f"invalid keyword: {word}\n")
            return 1
        if low in ("jobid", "job"):
            job = value
        elif low in _UPDATE_KEYS:
            if low == "priority":
                try:
                    body["priority"] = int(value)
                except ValueError:
                    sys.stderr.write("Invalid Priority value\nRequest aborted\n")
                    return 1
            else:
                body["time_limit"] = value
        else:
            sys.stderr.write(
                f"Update of this parameter is not supported: {word}\nRequest aborted\n"
            )
            return 1
    if not body:
        sys.stderr.write("No changes specified\n")
        return 1
    if job is None:
        sys.stderr.write("scontrol: error: No job ID specified\n")
        return 1
    rc = 0
    for item in split_list(job):
        for ref in expand_job_ids(item):
            try:
                api.request("PATCH", f"/jobs/{ref}", body=body)
            except ApiError as exc:
                rc = 1
                detail = "Invalid job id specified" if exc.status == 404 else exc.detail
                sys.stderr.write(f"slurm_update error: {detail}\n")
    return rc


def _show_hosts(entity: str, text: str | None) -> int:
    """show hostnames/hostlist：纯文本变换，不连服务（作业脚本里取节点名的惯用写法）。"""
    if text is None and entity == "hostnames":
        text = os.environ.get("SLURM_JOB_NODELIST")
    if not text:
        sys.stderr.write("no list of hosts specified\n")
        return 1
    try:
        names = hostlist.expand(text)
    except ValueError as exc:
        sys.stderr.write(f"scontrol: error: {exc}\n")
        return 1
    sys.stdout.write(
        "\n".join(names) + "\n" if entity == "hostnames" else hostlist.compress(names) + "\n"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    one_liner = False
    while args and args[0].startswith("-"):
        flag = args.pop(0)
        if flag in ("-o", "--oneliner"):
            one_liner = True
        elif flag in ("-d", "--details", "-a", "--all", "-Q", "--quiet", "-v", "--verbose"):
            pass
        elif flag in ("-h", "--help", "--usage"):
            sys.stdout.write(HELP)
            return 0
        else:
            sys.stderr.write(f"scontrol: error: 不认识的选项：{flag}\n")
            return 1
    if not args:
        sys.stderr.write(
            "scontrol: error: 需要命令（show、hold、release、requeue、update）；见 scontrol --help\n"
        )
        return 1
    command, rest = args[0].lower(), args[1:]
    if command == "show" and len(rest) >= 1 and rest[0].lower() in ("hostnames", "hostlist"):
        return _show_hosts(rest[0].lower(), rest[1] if len(rest) > 1 else None)
    with connect(PROG) as api:
        try:
            if command == "show":
                if not rest:
                    sys.stderr.write("too few arguments for keyword:show\n")
                    return 1
                entity = rest[0].lower()
                target = rest[1] if len(rest) > 1 else None
                if entity in ("job", "jobs", "jobid"):
                    return _show_job(api, target, one_liner)
                if entity in ("node", "nodes"):
                    return _show_nodes(api, target, one_liner, partitions=False)
                if entity in ("partition", "partitions", "part"):
                    return _show_nodes(api, target, one_liner, partitions=True)
                sys.stderr.write(f"invalid entity: {rest[0]} for keyword: show\n")
                return 1
            if command in ("hold", "uhold", "release", "requeue"):
                action = "hold" if command == "uhold" else command
                return _job_action(api, action, rest)
            if command == "update":
                return _update(api, rest)
        except ApiError as exc:
            sys.stderr.write(f"scontrol: error: {exc.detail}\n")
            return 1
        except Unreachable as exc:
            sys.stderr.write(f"scontrol: error: {exc}\n")
            return 1
    sys.stderr.write(f"invalid keyword: {args[0]}\n")
    return 1


def run() -> None:
    """控制台脚本 `scontrol` 的入口。"""
    entry(main)


if __name__ == "__main__":
    run()
