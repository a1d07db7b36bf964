"""Consumer capacity with the producer out of the way: a workload fills a big
ring while nobody reads it, then each consumer drains it, timed, in one run.

    .venv/bin/python benchmarks/drain.py [--calls N]

Consumers: bpfcap's `async for event in sub` and `sub.batches()` (a blocking
subscriber held the pump back during the fill), the Rust-only consumer of the
same ring and decoder, and bcc's Python callback (python3-bpfcc) on its own
ring with the same record minus the path. Targets: `async for event` at least
5x bcc's drain rate, `batches()` at least 10x, the Rust consumer 30 M events/s.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from common import HERE, Workload, require_root, table
from pipeline import BCC_PY, NATIVE, PY, build_native

RING = 256 << 20  # holds the whole fill: nothing is lost


def drain(kind: str, calls: int) -> dict:
    w = Workload(calls)
    if kind == "native":
        cmd = [str(NATIVE), str(w.pid), str(calls), str(RING), "4096", "20", "prefill"]
    elif kind == "bcc":
        cmd = [BCC_PY, str(HERE / "consumers/bcc_consumer.py"), str(w.pid), str(calls), str(RING), "prefill"]
    else:
        cmd = [PY, str(HERE / "consumers/bpfcap_consumer.py"), f"drain-{kind}", str(w.pid), str(calls), str(RING)]
    cons = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert cons.stdin is not None and cons.stdout is not None
    if cons.stdout.readline().strip() != "ready":
        cons.kill()
        w.proc.kill()
        raise SystemExit(f"{kind} consumer did not start")
    w.run()  # the ring fills; nobody reads
    cons.stdin.write("drain\n")
    cons.stdin.flush()
    out = json.loads(cons.stdout.readline())
    cons.stdin.close()
    cons.wait(timeout=120)
    return out


def main() -> int:
    require_root()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, default=1_000_000)
    args = p.parse_args()
    build_native()
    results = {k: drain(k, args.calls) for k in ("events", "batches", "native", "bcc")}
    bcc_rate = results["bcc"]["delivered"] / results["bcc"]["seconds"]
    rows = []
    names = {"events": "bpfcap `async for event`", "batches": "bpfcap `batches()`",
             "native": "Rust-only consumer", "bcc": "bcc Python callback"}
    targets = {"events": ("x bcc", 5), "batches": ("x bcc", 10), "native": ("M/s", 30), "bcc": None}
    ok = True
    for k, r in results.items():
        rate = r["delivered"] / r["seconds"]
        t = targets[k]
        if t is None:
            verdict = "-"
        else:
            got = rate / bcc_rate if t[0] == "x bcc" else rate / 1e6
            good = got >= t[1]
            ok &= good
            verdict = f"{'yes' if good else 'NO'} (>= {t[1]}{' ' + t[0] if t[0] == 'x bcc' else ' M/s'})"
        rows.append([names[k], f"{r['delivered']:,}", f"{r['lost']:,}", f"{rate / 1e6:.2f} M/s",
                     f"{r['cpu_s'] * 1e9 / max(r['delivered'], 1):.0f} ns", f"{rate / bcc_rate:.1f}", verdict])
    print(table(["consumer", "drained", "lost", "drain rate", "CPU per event", "vs bcc", "target met"], rows))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
