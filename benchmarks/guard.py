"""The CI's regression guard for the hot paths: three ratios, each measured
against a peer in the same run, with margins wide enough for a loaded machine.

    .venv/bin/python benchmarks/guard.py        (make bench-check)

1. A write the pid filter rejects costs under 2x the BPF time of do-nothing
   programs on the same attach points (kernel bpf_stats).
2. A traced write loop whose reader has stopped reading (a blocking subscriber
   that never reads) keeps at least 0.7x the speed it has with a reader that
   keeps up: the wake-up policy and the ring-full path put no cost on it.
3. `bpfcap exec -- true` takes under 1.5 s, start to exit.

Prints the figures; exits 1 if a ratio is out of bounds.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

import anyio

from bpfcap import EventFilter
from common import bare_cost, bpf_stats, rejected_cost, require_root, wait_for_released_links
from pipeline import run

CALLS = 400_000
WRITES = 1_000_000
ROUNDS = 3


async def filter_ratio() -> tuple[float, float, float]:
    with bpf_stats():
        bare = [(await bare_cost(CALLS))[1] for _ in range(ROUNDS)]
        rejected = [(await rejected_cost(CALLS, EventFilter(pids=[1 << 30])))[1] for _ in range(ROUNDS)]
    b, r = statistics.median(bare), statistics.median(rejected)
    return b, r, r / b


def stalled_ratio() -> tuple[float, float, float, int]:
    keep, stall, lost = [], [], 0
    for _ in range(ROUNDS):  # interleaved: a slower moment of the machine hits both
        _, calls, secs = run("batches", WRITES)
        keep.append(calls / secs)
        out, calls, secs = run("stalled", WRITES)
        stall.append(calls / secs)
        lost = out["lost"]
    k, s = statistics.median(keep), statistics.median(stall)
    return k, s, s / k, lost


def exec_seconds() -> tuple[float, float]:
    """(median seconds of a run, median seconds it first waited for the
    previous run's links to be released: see common.wait_for_released_links)."""
    times, waits = [], []
    for _ in range(ROUNDS):
        waits.append(wait_for_released_links())
        t = time.monotonic()
        subprocess.run([sys.executable, "-m", "bpfcap", "exec", "-o", "/dev/null", "--", "true"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.monotonic() - t)
    return statistics.median(times), statistics.median(waits)


def main() -> int:
    require_root()
    failures = []
    bare, rejected, ratio = anyio.run(filter_ratio)
    ok = ratio < 2.0
    failures += [] if ok else ["filter"]
    print(f"filter: rejected by pids {rejected:.1f} ns/write, bare programs {bare:.1f} ns: "
          f"{ratio:.2f}x (limit 2.0) {'ok' if ok else 'FAIL'}")
    keep, stall, ratio, lost = stalled_ratio()
    ok = ratio >= 0.7
    failures += [] if ok else ["stalled reader"]
    print(f"stalled reader: workload {stall / 1e6:.2f} M writes/s, with a reader that keeps up {keep / 1e6:.2f} M/s: "
          f"{ratio:.2f}x (limit 0.7), {lost:,} counted as lost {'ok' if ok else 'FAIL'}")
    secs, waited = exec_seconds()
    ok = secs < 1.5
    failures += [] if ok else ["exec"]
    print(f"startup: bpfcap exec -- true {secs:.2f} s (limit 1.5; before it, the previous run's links took "
          f"{waited:.2f} s more to be released) {'ok' if ok else 'FAIL'}")
    print("bench-check: " + (f"out of bounds: {', '.join(failures)}" if failures else "every ratio within bounds"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
