"""sinfo：分区与节点的概况，格式同 Slurm（conductor/slurm_show.py 的 format_sinfo）。

数据：GET /partitions（分区与时限）与 GET /dashboard 的 node_info（节点、所属分区、CPU 占用）。
"""

from __future__ import annotations

import sys
from datetime import datetime

from conductor import slurm_show
from conductor.client.slurm.grammar import SlurmParser, split_list
from conductor.client.slurm.http import Api, ApiError, Unreachable, connect, die, entry, perror

PROG = "sinfo"

HELP = """\
用法：sinfo [选项...]

分区与节点的概况：默认每个分区×状态一行，默认分区名后有 *。

  -N, --Node                每个节点一行
  -l, --long                长格式
  -o, --format=格式         %P %a %l %D %t %T %N %C %c %G %f %F %A %m %L
  -h, --noheader            不输出表头
  -R, --list-reasons        排空节点的原因、操作者与时刻（%20E %9u %19H %N）
  -p, --partition=分区,…    只列这些分区
  -t, --states=状态,…       只列这些状态的节点（idle、mix、alloc、down、drain、drained、draining）
  -s, --summarize           接受（同默认视图）
  -a, --all                 接受（Conductor 没有隐藏分区）
      --help                显示本帮助
"""


def _parser() -> SlurmParser:
    p = SlurmParser(PROG, "sinfo [选项...]")
    p.add_argument("-N", "--Node", action="store_true")
    p.add_argument("-l", "--long", action="store_true")
    p.add_argument("-o", "--format")
    p.add_argument("-h", "--noheader", action="store_true")
    p.add_argument("-R", "--list-reasons", action="store_true")
    p.add_argument("-p", "--partition", action="append", default=[])
    p.add_argument("-t", "--states")
    p.add_argument("-s", "--summarize", action="store_true")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def load(api: Api) -> tuple[list[slurm_show.PartitionView], list[slurm_show.NodeView]]:
    """分区与节点；服务端没有 GET /partitions（旧版本）时由节点推出分区（时限记为不限）。"""
    nodes = [slurm_show.node_from_api(n) for n in api.request("GET", "/dashboard")["node_info"]]
    try:
        items = api.request("GET", "/partitions")["partitions"]
        parts = [
            slurm_show.PartitionView(
                p["name"],
                bool(p["default"]),
                p.get("max_time_seconds"),
                p.get("default_time_seconds"),
            )
            for p in items
        ]
    except ApiError as exc:
        if exc.status != 404:
            raise
        names = sorted({p for n in nodes for p in n.partitions})
        parts = [slurm_show.PartitionView(n, i == 0, None) for i, n in enumerate(names)]
    return parts, nodes


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse(sys.argv[1:] if argv is None else list(argv), HELP)
    wanted = [p for v in args.partition for p in split_list(v)]
    states = split_list(args.states) if args.states else []
    for s in states:
        if not slurm_show.sinfo_state_known(s):
            die(PROG, f'Bad state string: "{s}"')
    if args.format is not None:
        try:
            slurm_show.parse_sinfo_format(args.format)
        except ValueError as exc:
            die(PROG, str(exc))
    with connect(PROG) as api:
        try:
            parts, nodes = load(api)
        except ApiError as exc:
            perror("slurm_load_partitions", exc.detail)
        except Unreachable as exc:
            perror("slurm_load_partitions", str(exc))
    out = ""
    if args.long:
        out = datetime.now().strftime("%a %b %e %H:%M:%S %Y") + "\n"
    if args.list_reasons:
        chosen = [n for n in nodes if not wanted or set(n.partitions) & set(wanted)]
        sys.stdout.write(
            out
            + slurm_show.format_sinfo_reasons(
                chosen, long=args.long, header=not args.noheader, fmt=args.format
            )
        )
        return 0
    out += slurm_show.format_sinfo(
        parts,
        nodes,
        args.format,
        header=not args.noheader,
        per_node=args.Node,
        long=args.long,
        partition_filter=wanted,
        state_filter=states,
    )
    sys.stdout.write(out)
    return 0


def run() -> None:
    """控制台脚本 `sinfo` 的入口。"""
    entry(main)


if __name__ == "__main__":
    run()
