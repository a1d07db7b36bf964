"""Records real ring buffer records for the decoder's unit tests (run as root).

    .venv/bin/python tests/data/record.py   # rewrites tests/data/process_records.json

The workload is fixed, so the unit tests can assert on what it did.
"""

import json
import pathlib
import subprocess
import time

from bpfcap import EventType, _native

OUT = pathlib.Path(__file__).with_name("process_records.json")
WORKLOAD = [
    # exec + fork + exit 7
    ["/bin/sh", "-c", "/bin/echo fixture-token >/dev/null; exit 7"],
    # argv longer than the record's 2048-byte bound
    ["/bin/echo", "long-argv", *["x" * 100] * 30],
    # killed by SIGKILL
    ["/bin/sh", "-c", "kill -9 $$"],
]


def main() -> None:
    cap = _native.Capture(1 << 20, 0)
    for t in (EventType.PROCESS_EXEC, EventType.PROCESS_EXIT, EventType.PROCESS_FORK):
        cap.enable(int(t))
    pids = set()
    for argv in WORKLOAD:
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        p.wait()
        pids.add(p.pid)
    time.sleep(0.2)
    records = []
    for raw in cap.drain_raw(100000):
        (events, _) = _native.decode_records([raw])
        if events and (events[0].pid in pids or events[0].ppid in pids):
            records.append({"type": events[0].type_name, "hex": raw.hex()})
            pids.add(events[0].pid)
    cap.close()
    OUT.write_text(json.dumps({"workload": WORKLOAD, "records": records}, indent=1) + "\n")
    print(f"wrote {len(records)} records to {OUT}")


if __name__ == "__main__":
    main()
