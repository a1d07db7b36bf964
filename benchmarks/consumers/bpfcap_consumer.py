"""bpfcap's Python API as a benchmark consumer.

    bpfcap_consumer.py MODE PID CALLS [RING_BYTES BATCH POLL_S]

MODE: `events` (async for event in sub), `batches` (async for batch in
sub.batches()), `latency` (events; records kernel-timestamp-to-receipt delays),
`rss` (events; samples its own RSS every second), `stalled` (a subscriber
with policy="block" that never reads: the reader falls behind for good, the
kernel ring fills and counts what it cannot hold), `drain-events` and
`drain-batches` (the same stalled subscriber while the workload fills a big
ring; on a line on stdin it starts reading, and times receiving every event
with `async for event` or `batches()`), `drain-json` and `drain-text`
(likewise, receiving `Lines` and writing them out as `bpfcap run -o FILE`
does: to a new file in the directory $BPFCAP_BENCH_DIR, or to /dev/null). Captures file_write events
of PID; prints `ready` once attached; when stdin closes it ends the capture
(what is in the ring is still delivered) and prints one JSON line.
"""

from __future__ import annotations

import os
import resource
import sys
import time

import anyio
import orjson

from bpfcap import CaptureManager, EventFilter, EventType, PerformanceConfig

FILE_WRITE = int(EventType.FILE_WRITE)
LOSS = int(EventType.LOSS)


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


async def main() -> None:
    mode, pid, calls = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    ring = int(sys.argv[4]) if len(sys.argv) > 4 else 16 << 20
    batch = int(sys.argv[5]) if len(sys.argv) > 5 else 4096
    poll = float(sys.argv[6]) if len(sys.argv) > 6 else 0.02
    cfg = PerformanceConfig(ring_buffer_size=ring, batch_size=batch, poll_interval=poll)
    delivered = checksum = lost_notices = 0
    delays: list[int] = []
    rss: list[int] = []
    done_at = None
    draining = mode.startswith("drain-")
    stalled = {"policy": "block", "max_batches": 1} if mode == "stalled" or draining else {}
    if mode in ("drain-json", "drain-text"):
        stalled["lines"] = mode[6:]
    async with CaptureManager(cfg) as mgr, await mgr.subscribe([EventType.FILE_WRITE], **stalled) as sub:  # type: ignore[arg-type]
        await mgr.set_filter(EventFilter(pids=[pid]))
        print("ready", flush=True)
        cpu0, t0 = cpu(), time.monotonic()
        async with anyio.create_task_group() as tg:

            async def stop_on_eof() -> None:
                await anyio.to_thread.run_sync(sys.stdin.read)
                mgr.request_stop()

            async def sample_rss() -> None:
                while True:
                    rss.append(rss_kib())
                    await anyio.sleep(1)

            if mode != "stalled" and not draining:
                tg.start_soon(stop_on_eof)
            if mode == "rss":
                tg.start_soon(sample_rss)
            if mode == "stalled":
                await anyio.to_thread.run_sync(sys.stdin.read)  # never reads the events, until stdin closes
            elif mode.startswith("drain-"):
                await anyio.to_thread.run_sync(sys.stdin.readline)
                cpu0, t0 = cpu(), time.monotonic()
                if "lines" in stalled:
                    where = os.environ.get("BPFCAP_BENCH_DIR")
                    path = os.path.join(where, "events") if where else os.devnull
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_EXCL if where else 0), 0o600)
                    async for lines in sub.batches():
                        view = memoryview(lines.data)
                        while view:
                            view = view[os.write(fd, view):]
                        delivered += lines.counts.get(EventType.FILE_WRITE.json_name, 0)
                        checksum += len(lines.data)
                        if delivered >= calls:
                            break
                    os.close(fd)
                elif mode == "drain-batches":
                    async for b in sub.batches():
                        for e in b:
                            if e.type_id == FILE_WRITE:
                                checksum += e.pid + e.tid + e.bytes
                                delivered += 1
                        if delivered >= calls:
                            break
                else:
                    async for e in sub:
                        if e.type_id == FILE_WRITE:
                            checksum += e.pid + e.tid + e.bytes
                            delivered += 1
                            if delivered >= calls:
                                break
                done_at = time.monotonic()
            elif mode == "batches":
                async for b in sub.batches():
                    for e in b:
                        if e.type_id == FILE_WRITE:
                            checksum += e.pid + e.tid + e.bytes
                            delivered += 1
                        else:
                            lost_notices += e.count
                    if done_at is None and delivered + lost_notices >= calls:
                        done_at = time.monotonic()
            elif mode == "latency":
                mono = time.monotonic_ns
                async for e in sub:
                    if e.type_id == FILE_WRITE:
                        delays.append(mono() - e.ts_ns)
                        delivered += 1
            else:
                async for e in sub:
                    if e.type_id == FILE_WRITE:
                        checksum += e.pid + e.tid + e.bytes
                        delivered += 1
                        if delivered == calls:
                            done_at = time.monotonic()
                    else:
                        lost_notices += e.count
            tg.cancel_scope.cancel()
        elapsed, used = time.monotonic() - t0, cpu() - cpu0
        stats = mgr.stats()
    out = {
        "delivered": delivered,
        "lost": stats.lost_in_kernel + sum(stats.dropped_at_subscribers.values()),
        "lost_notices": lost_notices,
        "cpu_s": round(used, 3),
        "seconds": round((done_at or time.monotonic()) - t0 if done_at else elapsed, 3),
        "checksum": checksum,
    }
    if delays:
        delays.sort()
        out["latency_ms"] = {str(p): round(delays[min(len(delays) - 1, int(len(delays) * p / 100))] / 1e6, 3) for p in (50, 99)}
    if rss:
        out["rss_kib"] = rss
    sys.stdout.write(orjson.dumps(out).decode() + "\n")


anyio.run(main)
