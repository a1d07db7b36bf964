"""Shared pieces of the benchmarks: the workload program, BPF run-time stats."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from pathlib import Path
from typing import Iterator

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BUILD = HERE / ".build"
EXAMPLE_OBJECT = ROOT / "target/bpf/bpfel-unknown-none/release/example"


def workload_binary() -> Path:
    """benchmarks/workload.c, compiled once (gcc -O2)."""
    BUILD.mkdir(exist_ok=True)
    exe = BUILD / "workload"
    src = HERE / "workload.c"
    if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
        subprocess.run(["gcc", "-O2", "-o", str(exe), str(src)], check=True)
    return exe


class Workload:
    """The workload, started but waiting: set filters for `pid`, then `run()`."""

    def __init__(self, calls: int, rate: float = 0) -> None:
        args = [str(workload_binary()), str(calls)] + ([str(rate)] if rate else [])
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.pid = self.proc.pid

    def run(self) -> tuple[int, float]:
        """Lets it go and waits: (calls, seconds)."""
        out, _ = self.proc.communicate("go\n", timeout=600)
        _, calls, seconds = out.split()
        return int(calls), float(seconds)


def run_workload(calls: int) -> tuple[int, float]:
    return Workload(calls).run()


@contextlib.contextmanager
def bpf_stats() -> Iterator[None]:
    """Turns on the kernel's per-program run-time accounting (run_time_ns, run_cnt)."""
    path = Path("/proc/sys/kernel/bpf_stats_enabled")
    before = path.read_text().strip()
    path.write_text("1")
    try:
        yield
    finally:
        path.write_text(before)


def prog_stats(names: set[str]) -> dict[str, tuple[int, int]]:
    """(run_cnt, run_time_ns) of loaded BPF programs by name (15-char kernel names)."""
    out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, check=True).stdout
    stats: dict[str, tuple[int, int]] = {}
    for p in json.loads(out):
        name = p.get("name", "")
        if name in names:
            cnt, ns = stats.get(name, (0, 0))
            stats[name] = (cnt + p.get("run_cnt", 0), ns + p.get("run_time_ns", 0))
    return stats


def table(headers: list[str], rows: list[list[object]]) -> str:
    cells = [headers] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def require_root() -> None:
    if os.geteuid() != 0:
        raise SystemExit("benchmarks load BPF programs: run them as root")
