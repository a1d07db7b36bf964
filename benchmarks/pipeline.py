"""The ring buffer pipeline at full speed, side by side with bcc, in one run.

    .venv/bin/python benchmarks/pipeline.py [--calls N] [--overload-seconds S]

A workload (benchmarks/workload.c) issues write(2) of 1 byte to /dev/null as
fast as it can; its writes are captured as file_write events for its pid and
consumed by
  (a) bpfcap's Python API, `async for event in sub` (touching pid, tid, bytes),
  (b) the same through `sub.batches()`,
  (c) a Rust-only consumer of the same ring and decoder (the native ceiling),
  (d) bcc's Python API (python3-bpfcc): the same capture on the same
      tracepoints without the path, ring buffer, a ctypes callback per event.
Each consumer runs alone with a fresh workload. Then the latency of (a) at a
steady 100 000 events/s, and its RSS during an overload.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import HERE, ROOT, Workload, require_root, table

PY = sys.executable
BCC_PY = "/usr/bin/python3"
RING = 16 << 20
NATIVE = ROOT / "target/release/examples/native_consumer"


def consumer_cmd(kind: str, pid: int, calls: int) -> list[str]:
    if kind in ("events", "batches", "latency", "rss", "stalled"):
        return [PY, str(HERE / "consumers/bpfcap_consumer.py"), kind, str(pid), str(calls), str(RING)]
    if kind == "native":
        return [str(NATIVE), str(pid), str(calls), str(RING)]
    return [BCC_PY, str(HERE / "consumers/bcc_consumer.py"), str(pid), str(calls), str(RING)]


def run(kind: str, calls: int, rate: float = 0) -> tuple[dict, int, float]:
    """One consumer against one workload: (consumer's JSON, calls, workload seconds)."""
    w = Workload(calls, rate)
    cons = subprocess.Popen(consumer_cmd(kind, w.pid, calls), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert cons.stdout is not None and cons.stdin is not None
    line = cons.stdout.readline()
    if line.strip() != "ready":
        cons.kill()
        w.proc.kill()
        raise SystemExit(f"{kind} consumer did not start: {line!r}")
    done, secs = w.run()
    time.sleep(1.0)  # let the consumer catch up with what is in the ring
    cons.stdin.close()
    out = json.loads(cons.stdout.readline())
    cons.wait(timeout=60)
    # The workload's one more write(2): its result line, to a pipe.
    return out, done + 1, secs


def build_native() -> None:
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "bpfcap-core", "--example", "native_consumer"],
                   cwd=ROOT, check=True)


def main() -> None:
    require_root()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, default=3_000_000)
    p.add_argument("--overload-seconds", type=float, default=30)
    args = p.parse_args()
    build_native()
    bcc = Path(BCC_PY).exists() and subprocess.run([BCC_PY, "-c", "import bcc"], capture_output=True).returncode == 0
    rows, results = [], {}
    labels = {"events": "(a) bpfcap, async for event", "batches": "(b) bpfcap, async for batch",
              "native": "(c) bpfcap ring, Rust only", "bcc": "(d) bcc Python, callback"}
    for kind in ("events", "batches", "native", "bcc"):
        if kind == "bcc" and not bcc:
            rows.append([labels[kind], "-", "-", "-", "-", "-", "python3-bpfcc missing: make bench-setup"])
            continue
        out, produced, secs = run(kind, args.calls)
        calls = produced
        delivered = out["delivered"]
        rate = delivered / out["seconds"] if out["seconds"] > 0 else 0
        results[kind] = rate
        rows.append([labels[kind], f"{calls:,}", f"{delivered:,}", f"{calls - delivered:,} ({out['lost']:,} counted)",
                     f"{rate / 1e6:.2f} M/s", f"{args.calls / secs / 1e6:.2f} M/s", f"{out['cpu_s']:.2f} s"])
    print(table(["consumer", "produced", "delivered", "lost", "delivered/s", "workload rate", "consumer CPU"], rows))
    if "native" in results:
        print(f"\n(a)/(c) = {results['events'] / results['native']:.2f} (target >= 0.9); "
              f"(b)/(c) = {results['batches'] / results['native']:.2f}", end="")
        if "bcc" in results:
            print(f"; (a)/(d) = {results['events'] / results['bcc']:.2f} (target >= 3)", end="")
        print()

    out, calls, secs = run("latency", 500_000, rate=100_000)
    calls -= 1  # the result line
    lat = out["latency_ms"]
    print(f"\nlatency, kernel timestamp to receipt, steady {calls / secs:,.0f} events/s, pollInterval 20 ms: "
          f"p50 {lat['50']} ms, p99 {lat['99']} ms (target p99 <= 25 ms); delivered {out['delivered']:,} of {calls:,}")

    overload = int(args.overload_seconds * 1.5e6)
    out, calls, secs = run("rss", overload)
    rss = out["rss_kib"]
    print(f"\noverload: {calls:,} events in {secs:.1f} s ({calls / secs / 1e6:.2f} M/s), delivered {out['delivered']:,}, "
          f"lost {calls - out['delivered']:,} ({out['lost']:,} counted); consumer RSS over time (MiB): "
          f"start {rss[0] / 1024:.0f}, max {max(rss) / 1024:.0f}, end {rss[-1] / 1024:.0f} "
          f"({len(rss)} samples, 1/s)")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
