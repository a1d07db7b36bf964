"""Soak: hours of load in a bounded run (10 minutes by default).

A mixed workload (soak_workload.c: process churn, file I/O, TCP and UDP) runs
at a steady rate as user nobody in a cgroup of its own, while bpfcap captures
it with a filter that changes every few seconds (by pid tree, cgroup, uid,
command name, event types; every one of them includes the workload). At the
end, for each event type, the events delivered plus the losses bpfcap counted
must equal what the workload did; RSS and open fds of the capturing process
must stay flat; and the kernel log must show no new warning.

    python soak.py [--duration 600] [--rate 200] [--switch-every 3]

Exits 1 if any check fails. Not part of the test run (see `make soak`).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

from common import BUILD, HERE, require_root, table

sys.path.insert(0, str(HERE.parent / "python"))
from bpfcap import CaptureManager, EventFilter, EventType, PerformanceConfig  # noqa: E402

T = EventType
TYPES = [T.PROCESS_FORK, T.PROCESS_EXEC, T.PROCESS_EXIT, T.FILE_OPEN, T.FILE_WRITE, T.FILE_READ,
         T.TCP_CONNECT, T.TCP_CLOSE, T.UDP_SEND]
NOBODY = 65534
TCP_PORT, UDP_PORT = 24711, 24712  # below the ephemeral range: no client port can equal them


def build(name: str, *flags: str) -> Path:
    BUILD.mkdir(exist_ok=True)
    exe, src = BUILD / name, HERE / f"{name}.c"
    if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
        subprocess.run(["gcc", "-O2", "-Wall", *flags, "-o", str(exe), str(src)], check=True)
    return exe


def expected(ticks: int, exec_opens: bool) -> dict[EventType, int]:
    """Every event the workload makes the kernel report, by type: one of each
    per tick, plus the accepted socket's close per tick and the listener's and
    the workload's own exit at the end (and, where the open probe sits in the
    kernel's vfs_open, the exec's open of the child binary)."""
    did = dict.fromkeys(TYPES, ticks)
    did[T.TCP_CLOSE] = 2 * ticks + 1
    did[T.PROCESS_EXIT] = ticks + 1
    did[T.FILE_OPEN] = ticks * (2 if exec_opens else 1)
    return did


def is_workloads(e, pid: int) -> bool:
    """The workload and its children are all that the filters should let
    through; anything else is counted as noise."""
    return e.type in TYPES and (e.pid == pid or e.ppid == pid)


def filters(pid: int, cgroup: str) -> list[tuple[str, EventFilter]]:
    comms = ["soak_workload", "soak_child"]
    return [
        ("pid tree", EventFilter(pids=[pid])),
        ("cgroup", EventFilter(cgroup_paths=[cgroup])),
        ("uid", EventFilter(uids=[NOBODY])),
        ("comm", EventFilter(comm=comms)),
        ("pid tree + types", EventFilter(pids=[pid], event_types=TYPES)),
        ("uid + comm", EventFilter(uids=[NOBODY], comm=comms)),
    ]


def cgroup_v2_root() -> Path:
    for p in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        if (p / "cgroup.controllers").exists():
            return p
    raise SystemExit("soak: no cgroup v2 hierarchy mounted")


def kernel_warnings() -> list[str] | None:
    r = subprocess.run(["dmesg", "--level=emerg,alert,crit,err,warn"], capture_output=True, text=True)
    return r.stdout.splitlines() if r.returncode == 0 else None


def usage() -> tuple[int, int]:
    """(RSS in KiB, open fds) of this process."""
    with open("/proc/self/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return rss, len(os.listdir("/proc/self/fd"))


async def soak(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="bpfcap-soak-"))
    os.chown(tmp, NOBODY, NOBODY)
    path = str(tmp / "data")
    cg_name = f"bpfcap-soak-{os.getpid()}"
    cg = cgroup_v2_root() / cg_name
    cg.mkdir()
    work = None
    warnings_before = kernel_warnings()
    delivered = dict.fromkeys(TYPES, 0)
    noise = 0
    samples: list[tuple[float, int, int]] = []
    switches = 0
    cfg = PerformanceConfig(ring_buffer_size=args.ring_buffer_size)
    try:
        async with CaptureManager(cfg) as mgr:
            await mgr.set_filter(EventFilter(event_types=[T.LOSS]))  # nothing until the workload exists
            sub = await mgr.subscribe(TYPES, policy="block", name="soak")
            exec_opens = any(p["name"] == "vfs_open" and p["mechanism"] in ("kprobe", "fentry") for p in mgr.probes())
            work = await anyio.open_process(
                ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                 str(build("soak_workload")), str(args.duration), str(args.rate), str(build("soak_child", "-static")),
                 path, str(TCP_PORT), str(UDP_PORT)], stdin=None, stdout=None, stderr=None)
            while Path(f"/proc/{work.pid}/stat").read_text().split(") ")[1][0] != "T":
                await anyio.sleep(0.01)  # until it has stopped itself, ready to go
            (cg / "cgroup.procs").write_text(str(work.pid))
            plan = filters(work.pid, "/" + cg_name)
            await mgr.set_filter(plan[0][1])
            os.kill(work.pid, signal.SIGCONT)
            start = time.monotonic()

            async def switch_filters() -> None:
                nonlocal switches
                while True:
                    await anyio.sleep(args.switch_every)
                    switches += 1
                    await mgr.set_filter(plan[switches % len(plan)][1])

            async def sample() -> None:
                while True:
                    samples.append((time.monotonic() - start, *usage()))
                    await anyio.sleep(10)

            consumed = anyio.Event()

            async def consume() -> None:
                nonlocal noise
                async for batch in sub.batches():
                    if args.consumer_delay:
                        await anyio.sleep(args.consumer_delay)  # a slow consumer: the ring overflows
                    for e in batch:
                        if is_workloads(e, work.pid):
                            delivered[e.type] += 1
                        elif e.type != T.LOSS:  # loss notices are counted in the stats
                            noise += 1
                consumed.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(switch_filters)
                tg.start_soon(sample)
                tg.start_soon(consume)
                if await work.wait() != 0:
                    raise SystemExit(f"soak: the workload failed (exit code {work.returncode})")
                samples.append((time.monotonic() - start, *usage()))
                # Everything already captured is handed out, then the subscription ends.
                await anyio.sleep(1)
                mgr.request_stop()
                await consumed.wait()
                tg.cancel_scope.cancel()
            st = mgr.stats()
            await sub.aclose()
    finally:
        if work is not None and work.returncode is None:
            work.kill()
            await work.wait()
        cg.rmdir()
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()

    did = expected(int(args.duration * args.rate), exec_opens)
    rows, ok = [], True
    for t in TYPES:
        lost = st.lost_by_type.get(t.json_name, 0)
        good = delivered[t] + lost == did[t]
        ok &= good
        rows.append([t.json_name, f"{did[t]:,}", f"{delivered[t]:,}", f"{lost:,}", "yes" if good else "NO"])
    print(f"\nsoak: {args.duration:.0f} s at {args.rate:g} operations of each kind per second, "
          f"{switches} filter changes ({', '.join(name for name, _ in plan)}), "
          f"ring {cfg.ring_buffer_size >> 10} KiB"
          + (f", consumer sleeping {args.consumer_delay:g} s per batch" if args.consumer_delay else "") + "\n")
    print(table(["event type", "workload did", "delivered", "lost (counted)", "delivered + lost = did"], rows))
    print(f"\nother events through the filters (other processes of nobody or of the same name): {noise:,}; "
          f"dropped at the subscriber: {sum(st.dropped_at_subscribers.values())}; decode errors: {st.decode_errors}")

    steady = [s for s in samples if s[0] >= min(30, args.duration / 4)]
    first, last = steady[0], steady[-1]
    rss_growth = last[1] - first[1]
    # fds: the event loop's worker threads come and go; a leak would only grow.
    flat = rss_growth < 4096 and last[2] <= first[2] + 2
    ok &= flat
    print()
    print(table(["", "at steady state", "at the end", "max"],
                [["RSS (MiB)", f"{first[1] / 1024:.1f}", f"{last[1] / 1024:.1f}", f"{max(s[1] for s in steady) / 1024:.1f}"],
                 ["open fds", first[2], last[2], max(s[2] for s in steady)]]))
    print(f"RSS and fds flat: {'yes' if flat else 'NO'} (RSS {rss_growth:+d} KiB from {first[0]:.0f} s to {last[0]:.0f} s)")

    warnings_after = kernel_warnings()
    if warnings_before is None or warnings_after is None:
        print("kernel log: unreadable (dmesg failed): not checked")
    else:
        new = [w for w in warnings_after if w not in set(warnings_before)]
        ok &= not new
        print(f"new kernel warnings: {len(new)}" + "".join(f"\n  {w}" for w in new))
    print("\nsoak: " + ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=600, help="seconds (default 600)")
    p.add_argument("--rate", type=float, default=200, help="operations of each kind per second (default 200)")
    p.add_argument("--switch-every", type=float, default=3, help="seconds between filter changes (default 3)")
    p.add_argument("--ring-buffer-size", type=int, default=PerformanceConfig.ring_buffer_size)
    p.add_argument("--consumer-delay", type=float, default=0,
                   help="seconds the consumer sleeps per batch, to make the kernel lose (and count) events")
    args = p.parse_args()
    require_root()
    sys.exit(anyio.run(soak, args))


if __name__ == "__main__":
    main()
