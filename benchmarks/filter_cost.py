"""What an event the filter rejects costs: in the program (kernel BPF stats) and
as the slowdown of a syscall-heavy workload, next to the same workload untraced
and with a bare (do-nothing) program on the same attach points, in one run;
once on a quiet machine and once while processes start and end elsewhere.

    .venv/bin/python benchmarks/filter_cost.py [--calls N] [--churn-rate R]

The workload writes 1 byte to /dev/null N times; bpfcap captures file_write
with a filter the workload does not match (one row per kind of filter), so
every one of its writes is rejected. On this host file_write uses the syscall
tracepoints sys_enter_write/sys_exit_write (no kprobes), so the bare programs
sit on those two tracepoints too. The churn is a loop of short-lived
processes (about R a second, default 300), as on an agent host.
"""

from __future__ import annotations

import argparse
import sys
from statistics import median

import anyio

from bpfcap import EventFilter, EventType
from common import Churn, bare_cost, bpf_stats, rejected_cost, require_root, run_workload, table

# Each rejects every event of the workload; listed from cheapest to dearest.
FILTERS = [
    ("eventTypes", EventFilter(event_types=[EventType.PROCESS_EXEC])),
    ("pids", EventFilter(pids=[1 << 30])),
    ("uids", EventFilter(uids=[4242])),
    ("comm", EventFilter(comm=["no-such-comm"])),
]
# Budgets over the bare programs, ns per rejected write.
BUDGET = {"eventTypes": 30, "pids": 30, "uids": 60, "comm": 60}


async def measure(calls: int, churn_rate: float, rounds: int) -> None:
    rows = []
    for condition in ("quiet", "churn"):
        with Churn(churn_rate if condition == "churn" else 0) as churn:
            # Rounds interleave the configurations; medians, so that one
            # disturbed run (the machine is shared) does not decide a row.
            runs: dict[str, list[tuple[float, float]]] = {}
            mech = "?"
            for _ in range(rounds):
                _, secs = run_workload(calls)
                runs.setdefault("untraced", []).append((calls / secs, 0.0))
                with bpf_stats():
                    runs.setdefault("bare", []).append(await bare_cost(calls))
                    for label, flt in FILTERS:
                        rate, ns, mech = await rejected_cost(calls, flt)
                        runs.setdefault(label, []).append((rate, ns))
            med = {k: (median(r for r, _ in v), median(n for _, n in v)) for k, v in runs.items()}
            untraced = med["untraced"][0]
            bare, bare_ns = med["bare"]
            rows.append([condition, "bare programs (enter + exit)", f"{bare / 1e6:.2f} M/s", f"{bare / untraced:.2f}",
                         "1.00", f"{bare_ns:.1f}", "0", "-"])
            for label, _ in FILTERS:
                rate, ns = med[label]
                extra = ns - bare_ns
                misses = [] if extra <= BUDGET[label] else [f"over +{BUDGET[label]} ns"]
                if label in ("pids", "eventTypes") and rate / bare < 0.95:
                    misses.append(f"rate {rate / bare:.3f} of bare < 0.95")
                rows.append([condition, f"bpfcap ({mech}), rejected by {label}", f"{rate / 1e6:.2f} M/s",
                             f"{rate / untraced:.2f}", f"{rate / bare:.2f}", f"{ns:.1f}", f"{extra:+.1f}",
                             f"NO ({', '.join(misses)})" if misses else "yes"])
        rows.append([condition, "untraced", f"{untraced / 1e6:.2f} M/s", "1.00", "-", "-", "-",
                     f"(other processes: {churn.rate:.0f}/s)"])
    print(f"medians of {rounds} interleaved rounds")
    print(table(["machine", "configuration", "workload write(2)/s", "vs untraced", "vs bare", "BPF ns/write",
                 "vs bare", "within budget"], rows))


def main() -> None:
    require_root()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, default=2_000_000)
    p.add_argument("--churn-rate", type=float, default=300)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    anyio.run(measure, args.calls, args.churn_rate, args.rounds)


if __name__ == "__main__":
    sys.exit(main())
