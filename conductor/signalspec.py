"""信号的写法（纯函数）：sbatch 的 --signal=[{R|B}:]<sig_num>[@sig_time] 与 scancel --signal 的信号名。

同 Slurm（src/common/proc_args.c get_signal_opts、sig_name2num）：信号可写编号（10）或名字，名字
带不带 SIG 前缀、大小写都行（USR1、SIGUSR1、usr1）；不写 @秒数时默认 60 秒，秒数为 0–65535 的整数。
B: 只发给批处理脚本的 shell；不带 B: 发给全部作业步的任务（不发给批处理 shell）。R:（允许与设了
MaxStartDelay 的预约重叠、被抢占时重新排队）依赖预约与抢占，Conductor 都没有，明确拒绝而不是假装支持。
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

# 不写 @秒数时的默认提前量（sbatch 手册：the default time will be 60 seconds）
DEFAULT_SIGNAL_SECONDS = 60
MAX_SIGNAL_SECONDS = 65535


@dataclass(frozen=True)
class SignalSpec:
    """--signal 的解析结果：number 为信号编号，seconds 为时限前多少秒，batch 为只发给批处理 shell。"""

    number: int
    seconds: int
    batch: bool


def signal_number(text: str) -> int:
    """信号名或编号 → 编号；无效时 ValueError（消息说明可用的写法）。"""
    raw = text.strip()
    if raw.isdigit():
        number = int(raw)
        if not 1 <= number <= signal.SIGRTMAX:
            raise ValueError(f"信号编号 {raw} 无效：应在 1–{int(signal.SIGRTMAX)} 之间")
        return number
    name = raw.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise ValueError(
            f"不认识的信号 {text!r}：应为信号名（如 USR1、SIGUSR1、TERM）或编号（如 10）"
        ) from None


def parse_signal_spec(text: str) -> SignalSpec:
    """解析 [{R|B}:]<sig_num>[@sig_time]；无效时 ValueError。"""
    raw = text.strip()
    batch = False
    head, colon, rest = raw.partition(":")
    if colon:
        flags = head.upper()
        if flags not in ("B", "R", "BR", "RB"):
            raise ValueError(f"--signal 的前缀 {head!r} 无效：只能是 B:（只发给批处理 shell）")
        if "R" in flags:
            raise ValueError(
                "不支持 --signal 的 R: 前缀：它让作业与设了 MaxStartDelay 的预约重叠并在抢占时重新排队，"
                "Conductor 没有预约与抢占；请去掉 R:"
            )
        batch = True
        raw = rest
    sig, at, seconds_text = raw.partition("@")
    if not sig.strip():
        raise ValueError(f"--signal 缺少信号：{text!r}（应如 USR1@60、B:TERM@120 或 10）")
    number = signal_number(sig)
    seconds = DEFAULT_SIGNAL_SECONDS
    if at:
        if not seconds_text.strip().isdigit():
            raise ValueError(
                f"--signal 的秒数 {seconds_text!r} 无效：应为 0–{MAX_SIGNAL_SECONDS} 的整数"
            )
        seconds = int(seconds_text)
        if seconds > MAX_SIGNAL_SECONDS:
            raise ValueError(f"--signal 的秒数 {seconds} 超过上限 {MAX_SIGNAL_SECONDS}")
    return SignalSpec(number, seconds, batch)


def signal_name(number: int) -> str:
    """编号 → 不带 SIG 的名字（USR1）；没有名字的实时信号给编号。"""
    try:
        return signal.Signals(number).name.removeprefix("SIG")
    except ValueError:
        return str(number)
