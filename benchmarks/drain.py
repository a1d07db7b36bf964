"""Consumer capacity with the producer out of the way: a workload fills a big
ring while nobody reads it, then each consumer drains it, timed, in one run.

    .venv/bin/python benchmarks/drain.py [--calls N]

Consumers: bpfcap's `async for event in sub` and `sub.batches()` (a blocking
subscriber held the pump back during the fill), JSON lines written to a file
(`subscribe(lines="json")`, the path of `bpfcap run -o FILE`), the Rust-only consumer of the
same ring and decoder (borrowed views, and owned events), and bcc's Python callback (python3-bpfcc) on its own
ring with the same record minus the path. Targets: `async for event` at least
5x bcc's drain rate, `batches()` at least 10x, JSON lines 1.5 M events/s, the
Rust consumer 30 M events/s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from common import HERE, Workload, require_root, table
from pipeline import BCC_PY, NATIVE, PY, build_native

RING = 256 << 20  # holds the whole fill: nothing is lost


def drain(kind: str, calls: int, where: str = "") -> dict:
    w = Workload(calls)
    if kind in ("native", "native owned"):
        cmd = [str(NATIVE), str(w.pid), str(calls), str(RING), "4096", "20", "prefill", *kind.split()[1:]]
    elif kind == "bcc":
        cmd = [BCC_PY, str(HERE / "consumers/bcc_consumer.py"), str(w.pid), str(calls), str(RING), "prefill"]
    else:
        cmd = [PY, str(HERE / "consumers/bpfcap_consumer.py"), f"drain-{kind}", str(w.pid), str(calls), str(RING)]
    env = {**os.environ, "BPFCAP_BENCH_DIR": where}
    cons = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
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
    results = {k: drain(k, args.calls) for k in ("events", "batches", "json", "native", "native owned", "bcc")}
    with tempfile.TemporaryDirectory(dir=HERE) as tmp:
        for k in ("json", "text"):
            os.mkdir(where := os.path.join(tmp, k))
            results[f"{k} file"] = drain(k, args.calls, where)
    bcc_rate = results["bcc"]["delivered"] / results["bcc"]["seconds"]
    rows = []
    names = {"events": "bpfcap `async for event`", "batches": "bpfcap `batches()`",
             "json": "bpfcap JSON lines to /dev/null", "json file": "bpfcap JSON lines to a new file",
             "text file": "bpfcap text lines to a new file", "native": "Rust-only consumer (borrowed views)",
             "native owned": "Rust-only consumer (owned events)", "bcc": "bcc Python callback"}
    targets = {"events": ("x bcc", 5), "batches": ("x bcc", 10), "json": ("M/s", 1.5), "json file": ("M/s", 1.5),
               "text file": ("M/s", 1.5), "native": ("M/s", 30), "native owned": None, "bcc": None}
    ok = True
    fs_notes = []
    for k, r in results.items():
        rate = r["delivered"] / r["seconds"]
        t = targets[k]
        if t is None:
            verdict = "-"
        else:
            want = t[1]
            if k.endswith(" file"):
                # A file cannot take lines faster than the file system takes new
                # bytes: measured alike, in this run, for this many bytes.
                per_event = r["checksum"] / max(r["delivered"], 1)
                fs = fs_rate(r["checksum"]) / per_event / 1e6
                fs_notes.append(f"{k}: {per_event:.0f} bytes/event; the file system alone takes {fs:.2f} M of them/s")
                want = min(want, 0.8 * fs)
            got = rate / bcc_rate if t[0] == "x bcc" else rate / 1e6
            good = got >= want
            ok &= good
            verdict = f"{'yes' if good else 'NO'} (>= {want:.3g}{' ' + t[0] if t[0] == 'x bcc' else ' M/s'})"
        rows.append([names[k], f"{r['delivered']:,}", f"{r['lost']:,}", f"{rate / 1e6:.2f} M/s",
                     f"{r['cpu_s'] * 1e9 / max(r['delivered'], 1):.0f} ns", f"{rate / bcc_rate:.1f}", verdict])
    print(table(["consumer", "drained", "lost", "drain rate", "CPU per event", "vs bcc", "target met"], rows))
    for note in fs_notes:
        print(note)
    return 0 if ok else 1


def fs_rate(nbytes: int) -> float:
    """Bytes/s at which this file system takes `nbytes` written to a new file
    in blocks of a batch's size (what `bpfcap run -o FILE` asks of it)."""
    block = b"x" * (1400 << 10)
    with tempfile.TemporaryDirectory(dir=HERE) as tmp:
        fd = os.open(os.path.join(tmp, "bytes"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        t0 = time.monotonic()
        for _ in range(max(1, nbytes // len(block))):
            os.write(fd, block)
        seconds = time.monotonic() - t0
        os.close(fd)
    return max(1, nbytes // len(block)) * len(block) / seconds


if __name__ == "__main__":
    sys.exit(main())
