"""Shared pieces of the benchmarks: the workload program, BPF run-time stats."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
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


def wait_for_released_links(timeout: float = 10.0) -> float:
    """Waits until no earlier capture's links are still being released (a
    stopped capture hands them to processes named `bpfcap-release`, and the
    kernel releases tracepoints one at a time: a run started meanwhile waits
    for them in its attach). Returns the seconds waited, for the table."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        names = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            with contextlib.suppress(OSError):
                names.append(Path(f"/proc/{pid}/comm").read_text().strip())
        if "bpfcap-release" not in names:
            break
        time.sleep(0.02)
    return time.monotonic() - t0


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


# -- what the filter costs, in BPF time per event --------------------------------------


async def bare_cost(calls: int) -> tuple[float, float]:
    """(workload rate, BPF ns per write) with do-nothing programs on file_write's
    attach points (the syscall tracepoints here): the floor any filter is measured against."""
    from bpfcap import BPFProgSpec, CaptureManager

    async with CaptureManager() as mgr:
        for point in ("enter", "exit"):
            await mgr.load_program(BPFProgSpec(f"bare-{point}", "tracepoint", f"syscalls:sys_{point}_write",
                                               object=str(EXAMPLE_OBJECT), program="example_bare"))
        before = prog_stats({"example_bare"})
        _, secs = run_workload(calls)
        after = prog_stats({"example_bare"})
    ns = (after["example_bare"][1] - before.get("example_bare", (0, 0))[1]) / calls
    return calls / secs, ns


async def rejected_cost(calls: int, event_filter: object) -> tuple[float, float, str]:
    """(workload rate, BPF ns per write, mechanism) with bpfcap's file_write
    programs and a filter that rejects every write of the workload."""
    from bpfcap import CaptureManager, EventType

    async with CaptureManager() as mgr, await mgr.subscribe([EventType.FILE_WRITE]) as sub:
        probe = next(p for p in mgr.probes() if p["name"] == "vfs_write")
        names = {program[:15] for program in probe["programs"]}
        await mgr.set_filter(event_filter)  # type: ignore[arg-type]
        before = prog_stats(names)
        _, secs = run_workload(calls)
        after = prog_stats(names)
        await sub.aclose()
    ns = sum(after.get(n, (0, 0))[1] - before.get(n, (0, 0))[1] for n in names) / calls  # (a program that never ran has no stats)
    return calls / secs, ns, probe["mechanism"]


class Churn:
    """Processes starting and ending elsewhere on the machine, about `rate` a
    second (0: none), while the block runs; `rate` is then what was measured."""

    def __init__(self, rate: float) -> None:
        self.target = rate
        self.rate = 0.0

    def __enter__(self) -> "Churn":
        import time

        self.proc = None
        if self.target > 0:
            pause = 1 / self.target
            self.proc = subprocess.Popen(["sh", "-c", f"while :; do /bin/true; sleep {pause:.4f}; done"],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.t0, self.n0 = time.monotonic(), forks_so_far()
        return self

    def __exit__(self, *exc: object) -> None:
        import time

        self.rate = (forks_so_far() - self.n0) / (time.monotonic() - self.t0)
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()


def forks_so_far() -> int:
    with open("/proc/stat") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("processes "))
