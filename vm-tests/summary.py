"""The VM matrix as tables: kernel x probe -> mechanism, as `bpfcap doctor --json`
reported it with the preferred mechanisms and as the probe tests used each one
with fallbacks forced, plus each kernel's result and time (from run.sh's log).
The tests write out/<kernel>/doctor.json and mechanisms.jsonl (BPFCAP_RESULTS_DIR).

    python3 vm-tests/summary.py [run.sh's output file]
"""

import json
import re
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"


def print_table(label: str, table: dict[str, dict[str, str]], kernels: list[str]) -> None:
    print(f"\nprobe mechanisms, {label}:")
    print(f"{'probe':<22}" + "".join(f"{k:<24}" for k in kernels))
    for probe, row in table.items():
        print(f"{probe:<22}" + "".join(f"{row.get(k, '-'):<24}" for k in kernels))


def main() -> None:
    dirs = sorted(p for p in OUT.iterdir() if p.is_dir())
    kernels = [d.name for d in dirs]
    doctor: dict[str, dict[str, str]] = {}
    forced: dict[str, dict[str, dict[str, str]]] = {}
    for d in dirs:
        try:
            for p in json.loads((d / "doctor.json").read_text())["probes"]:
                doctor.setdefault(p["name"], {})[d.name] = p["mechanism"] or "UNAVAILABLE"
        except (OSError, ValueError, KeyError) as e:  # a broken run must not hide the others
            print(f"{d.name}: no doctor output ({e})", file=sys.stderr)
        path = d / "mechanisms.jsonl"
        for line in path.read_text().splitlines() if path.exists() else []:
            r = json.loads(line)
            forced.setdefault(r["disabled"], {}).setdefault(r["probe"], {})[d.name] = r["mechanism"]
    if not kernels:
        print("no VM results in vm-tests/out")
        return
    print_table("bpfcap doctor", doctor, kernels)
    for disabled, table in sorted(forced.items(), key=lambda kv: len(kv[0].split(","))):
        if disabled:
            print_table(f"probe tests with {disabled.replace(',', ', ')} disabled", table, kernels)
    if len(sys.argv) > 1:
        results = re.findall(r"VMTEST RESULT (\S+) (PASS|FAIL) (\S+)", Path(sys.argv[1]).read_text(errors="replace"))
        print("\n" + "  ".join(f"{k}: {r} in {s} s" for k, r, s in results))


if __name__ == "__main__":
    main()
