"""The VM matrix as a table: kernel x probe -> mechanism used (from each
kernel's `bpfcap doctor --json`, with the preferred mechanisms and with each
fallback forced), plus the result and times of each kernel (from run.sh's log).

    python3 vm-tests/summary.py [run.sh's output file]
"""

import json
import re
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
RUNS = [("doctor.json", "preferred"), ("doctor-fentry.json", "fentry forced"), ("doctor-tracepoint.json", "tracepoint forced")]


def main() -> None:
    kernels = sorted(p for p in OUT.iterdir() if p.is_dir() and (p / "doctor.json").exists())
    if not kernels:
        print("no VM results in vm-tests/out")
        return
    results = {}
    if len(sys.argv) > 1:
        for line in Path(sys.argv[1]).read_text(errors="replace").splitlines():
            m = re.match(r"VMTEST RESULT (\S+) (PASS|FAIL) (\S+)", line)
            if m:
                results[m.group(1)] = f"{m.group(2)} in {m.group(3)} s"
    for file, label in RUNS:
        table: dict[str, dict[str, str]] = {}
        for k in kernels:
            path = k / file
            if not path.exists():
                continue
            doc = json.loads(path.read_text())
            for p in doc["probes"]:
                table.setdefault(p["name"], {})[k.name] = p["mechanism"] or "UNAVAILABLE"
        names = [k.name for k in kernels]
        print(f"\nprobe mechanisms, {label}:")
        print(f"{'probe':<22}" + "".join(f"{n:<24}" for n in names))
        for probe, row in table.items():
            print(f"{probe:<22}" + "".join(f"{row.get(n, '-'):<24}" for n in names))
    if results:
        print("\n" + "  ".join(f"{k}: {v}" for k, v in results.items()))


if __name__ == "__main__":
    main()
