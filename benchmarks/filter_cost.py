"""What an event the filter rejects costs: in the program (kernel BPF stats) and
as the slowdown of a syscall-heavy workload, next to the same workload untraced
and with a bare (do-nothing) program on the same attach points, in one run.

    .venv/bin/python benchmarks/filter_cost.py [--calls N]

The workload writes 1 byte to /dev/null N times; bpfcap captures file_write
with a filter the workload does not match (one row per kind of filter), so
every one of its writes is rejected. On this
host file_write uses the syscall tracepoints sys_enter_write/sys_exit_write
(no kprobes), so the bare programs sit on those two tracepoints too.
"""

from __future__ import annotations

import argparse
import sys

import anyio

from bpfcap import BPFProgSpec, CaptureManager, EventFilter, EventType
from common import EXAMPLE_OBJECT, bpf_stats, prog_stats, require_root, run_workload, table


async def measure(calls: int) -> None:
    rows = []
    _, secs = run_workload(calls)
    untraced = calls / secs
    rows.append(["untraced", f"{untraced / 1e6:.2f} M/s", "1.00", "-", "-"])

    with bpf_stats():
        async with CaptureManager() as mgr:
            for point in ("enter", "exit"):
                await mgr.load_program(BPFProgSpec(f"bare-{point}", "tracepoint", f"syscalls:sys_{point}_write",
                                                   object=str(EXAMPLE_OBJECT), program="example_bare"))
            before = prog_stats({"example_bare"})
            _, secs = run_workload(calls)
            after = prog_stats({"example_bare"})
        bare = calls / secs
        bare_ns = (after["example_bare"][1] - before.get("example_bare", (0, 0))[1]) / calls
        rows.append(["bare programs (enter + exit)", f"{bare / 1e6:.2f} M/s", f"{bare / untraced:.2f}", "1.00",
                     f"{bare_ns:.1f}"])

        names = {"bpfcap_wr_etp", "bpfcap_wr_xtp"}
        results = {}
        for label, flt in FILTERS:
            async with CaptureManager() as mgr, await mgr.subscribe([EventType.FILE_WRITE]) as sub:
                mech = next(p["mechanism"] for p in mgr.probes() if p["name"] == "vfs_write")
                await mgr.set_filter(flt)  # the workload never matches
                before = prog_stats(names)
                _, secs = run_workload(calls)
                after = prog_stats(names)
                filtered_count = mgr.stats().by_type.get("file_write", {}).get("filtered", 0)
                await sub.aclose()
            rate = calls / secs
            ns = sum(after[n][1] - before.get(n, (0, 0))[1] for n in names) / calls
            results[label] = (rate, ns, filtered_count)
            rows.append([f"bpfcap ({mech}), rejected by {label}", f"{rate / 1e6:.2f} M/s", f"{rate / untraced:.2f}",
                         f"{rate / bare:.2f}", f"{ns:.1f}", f"{ns - bare_ns:+.1f}"])
    rows[1].append("0")
    rows[0].append("-")
    print(table(["configuration", "workload write(2)/s", "vs untraced", "vs bare", "BPF ns/write", "vs bare"], rows))
    rate, ns, counted = results["pids"]
    print()
    print(f"pid filter (the agent-monitoring case): a rejected write costs {ns - bare_ns:.1f} ns more than the bare "
          f"programs (target < 50 ns); the workload keeps {rate / bare:.1%} of its speed with them (target >= 95 %); "
          f"the kernel counted {counted} rejected file_write events for {calls} writes")


# Each rejects every event of the workload; listed from cheapest to dearest.
FILTERS = [
    ("eventTypes", EventFilter(event_types=[EventType.PROCESS_EXEC])),
    ("pids", EventFilter(pids=[1 << 30])),
    ("uids", EventFilter(uids=[4242])),
    ("comm", EventFilter(comm=["no-such-comm"])),
]


def main() -> None:
    require_root()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, default=2_000_000)
    args = p.parse_args()
    anyio.run(measure, args.calls)


if __name__ == "__main__":
    sys.exit(main())
