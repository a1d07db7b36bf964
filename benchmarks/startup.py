"""Startup: how long `bpfcap exec` (every event type) keeps a command waiting,
and how long `bpfcap doctor` takes; medians of interleaved rounds.

    .venv/bin/python benchmarks/startup.py [--rounds N]

Each round starts once the previous one's BPF links are released (in the
background, after bpfcap exits: the kernel releases tracepoints one at a
time); the table says how long that took.

"First instruction" is the command's own clock (`date +%s.%N`, wall time)
against the wall time just before `bpfcap exec` was started. Targets: at most
0.5 s to the first instruction, `bpfcap doctor` at most 1 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from common import require_root, table, wait_for_released_links

BPFCAP = [sys.executable, "-m", "bpfcap"]


def exec_round() -> tuple[float, float]:
    """(seconds to the command's first instruction, seconds to bpfcap's exit)."""
    t0 = time.time()
    r = subprocess.run([*BPFCAP, "exec", "-o", "/dev/null", "--", "date", "+%s.%N"],
                       capture_output=True, text=True, check=True)
    done = time.time() - t0
    return float(r.stdout.split()[0]) - t0, done


def doctor_round() -> float:
    t0 = time.monotonic()
    subprocess.run([*BPFCAP, "doctor"], capture_output=True, check=True)
    return time.monotonic() - t0


def main() -> int:
    require_root()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    first, total, doctor, released = [], [], [], []
    for _ in range(args.rounds):
        wait_for_released_links()
        a, b = exec_round()
        first.append(a)
        total.append(b)
        released.append(wait_for_released_links())
        doctor.append(doctor_round())
    m = statistics.median
    rows = [
        ["`bpfcap exec` start to the command's first instruction", f"{m(first):.2f} s", "<= 0.5 s",
         "yes" if m(first) <= 0.5 else "NO"],
        ["`bpfcap exec -- date`, start to exit", f"{m(total):.2f} s", "-", "-"],
        ["`bpfcap exec` exit to its links released (in the background)", f"{m(released):.2f} s", "-", "-"],
        ["`bpfcap doctor`", f"{m(doctor):.2f} s", "<= 1 s", "yes" if m(doctor) <= 1 else "NO"],
    ]
    print(table(["what (median of %d)" % args.rounds, "wall", "target", "met"], rows))
    return 0 if m(first) <= 0.5 and m(doctor) <= 1 else 1


if __name__ == "__main__":
    sys.exit(main())
