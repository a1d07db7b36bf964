"""The ring buffer pipeline: exact loss accounting, subscriber policies, the
low-level RingBufferManager, several rings."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import anyio
import pytest

import orjson

from bpfcap import CaptureManager, ConfigError, EventFilter, EventType, Lines, PerformanceConfig, RingBufferManager

pytestmark = pytest.mark.anyio
NOTHING = EventFilter(event_types=(EventType.LOSS,))
# Waits for a line, writes N bytes to /dev/null one by one, then its result
# line to stdout: N + 1 file_write events.
WRITER = "import os, sys\nos.write(1, b'ready\\n')\nsys.stdin.readline()\nfd = os.open('/dev/null', os.O_WRONLY)\nfor _ in range({n}): os.write(fd, b'x')\nos.write(1, b'done\\n')\n"


class Writer:
    def __init__(self, n: int) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", WRITER.format(n=n)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.pid = self.proc.pid
        self.events = n + 1
        # Started up (the interpreter may write .pyc files while it starts): only
        # what it does from now on is counted.
        assert self.proc.stdout is not None and self.proc.stdout.readline() == b"ready\n"

    def run(self) -> None:
        self.proc.communicate(b"go\n", timeout=120)


async def follow(mgr: CaptureManager, n: int) -> Writer:
    """A writer whose events (only) pass. Set NOTHING before subscribing: what
    a probe admits before the filter excludes it is still delivered."""
    w = Writer(n)
    await mgr.set_filter(EventFilter(pids=[w.pid]))
    return w


def writes(batch: list[Any]) -> int:
    return sum(1 for e in batch if e.type_id == EventType.FILE_WRITE)


async def test_loss_accounting_is_exact_with_a_tiny_ring_and_a_stalled_consumer() -> None:
    # A one-page-per-CPU-scale ring and a subscriber that blocks the reader and
    # reads nothing until the workload is done: most records cannot be written.
    cfg = PerformanceConfig(ring_buffer_size=64 << 10, batch_size=64, poll_interval=0.005)
    async with CaptureManager(cfg) as mgr:
        await mgr.set_filter(NOTHING)
        sub = await mgr.subscribe([EventType.FILE_WRITE], policy="block", max_batches=1)
        w = await follow(mgr, 100_000)
        await anyio.to_thread.run_sync(w.run)
        got = lost_notices = 0
        async with sub:
            with anyio.move_on_after(2):
                async for batch in sub.batches():
                    got += writes(batch)
                    lost_notices += sum(e.count for e in batch if e.type_id == EventType.LOSS)
                    if got + lost_notices >= w.events:
                        break
        st = mgr.stats()
    assert st.lost_in_kernel > 0, "the tiny ring overflowed"
    assert got + st.lost_in_kernel + sum(st.dropped_at_subscribers.values()) == w.events
    assert lost_notices == st.lost_in_kernel  # every kernel loss announced in band
    assert st.lost_by_type == {"file_write": st.lost_in_kernel} and sum(st.lost_by_cpu) == st.lost_in_kernel


async def test_a_full_queue_drops_for_that_subscriber_only_and_says_so() -> None:
    cfg = PerformanceConfig(ring_buffer_size=64 << 20, batch_size=256, poll_interval=0.005)
    async with CaptureManager(cfg) as mgr:
        await mgr.set_filter(NOTHING)
        fast = await mgr.subscribe([EventType.FILE_WRITE], name="fast")
        slow = await mgr.subscribe([EventType.FILE_WRITE], name="slow", max_batches=2)
        w = await follow(mgr, 50_000)
        counts = {"fast": 0, "slow": 0, "slow_lost": 0}

        async def read_fast() -> None:
            async for batch in fast.batches():
                counts["fast"] += writes(batch)
                if counts["fast"] == w.events:
                    return

        async def read_slow() -> None:
            async for batch in slow.batches():
                counts["slow"] += writes(batch)
                counts["slow_lost"] += sum(e.count for e in batch if e.type_id == EventType.LOSS)
                await anyio.sleep(0.05)  # a slow consumer

        async with anyio.create_task_group() as tg:
            tg.start_soon(read_slow)
            with anyio.fail_after(90):
                async with anyio.create_task_group() as inner:
                    inner.start_soon(read_fast)
                    await anyio.to_thread.run_sync(w.run)
            await anyio.sleep(0.5)
            st = mgr.stats()
            mgr.request_stop()
        await fast.aclose()
        await slow.aclose()
    assert counts["fast"] == w.events  # the fast subscriber got everything
    assert st.dropped_at_subscribers.get("fast", 0) == 0
    dropped = st.dropped_at_subscribers["slow"]
    assert dropped > 0 and counts["slow"] + dropped == w.events
    assert 0 < counts["slow_lost"] <= dropped  # told in band (the last drops may still be pending)


async def test_block_policy_loses_nothing_at_the_subscriber() -> None:
    cfg = PerformanceConfig(ring_buffer_size=64 << 20, batch_size=256, poll_interval=0.005)
    async with CaptureManager(cfg) as mgr:
        await mgr.set_filter(NOTHING)
        sub = await mgr.subscribe([EventType.FILE_WRITE], policy="block", max_batches=2)
        w = await follow(mgr, 100_000)
        got = 0
        async with anyio.create_task_group() as tg:
            async def read() -> None:
                nonlocal got
                async for batch in sub.batches():
                    got += writes(batch)
                    await anyio.sleep(0.001)
                    if got == w.events:
                        return
            tg.start_soon(read)
            await anyio.to_thread.run_sync(w.run)
        st = mgr.stats()
        await sub.aclose()
    assert got == w.events
    assert sum(st.dropped_at_subscribers.values()) == 0 and st.lost_in_kernel == 0


async def test_ring_buffer_manager_poll_and_callback() -> None:
    cfg = PerformanceConfig(ring_buffer_size=1 << 22, poll_interval=0.01, rings=2)
    seen: list[Any] = []
    async with RingBufferManager(cfg) as rb:
        rb.native.enable(int(EventType.PROCESS_EXEC))
        rb.set_callback(seen.append)
        proc = await anyio.open_process(["/bin/echo", "ring-buffer-manager"])
        await proc.wait()
        polled: list[Any] = []
        with anyio.fail_after(5):
            while not any(e.argv == ["/bin/echo", "ring-buffer-manager"] for e in polled):
                polled += await rb.poll()
        st = rb.get_stats()
    assert polled == seen  # the callback saw every polled event
    assert st.received >= 1 and st.polls >= 1 and st.ring_bytes == 2 * (1 << 22)
    assert 0 <= st.fill_ratio <= 1 and st.decode_errors == 0
    with pytest.raises(TypeError, match="callable"):
        rb.set_callback(42)  # type: ignore[arg-type]


async def test_several_rings_deliver_everything_in_time_order() -> None:
    cfg = PerformanceConfig(ring_buffer_size=1 << 22, batch_size=1024, poll_interval=0.01, rings=4)
    async with CaptureManager(cfg) as mgr:
        await mgr.set_filter(NOTHING)
        sub = await mgr.subscribe([EventType.FILE_WRITE])
        w = await follow(mgr, 20_000)
        got: list[Any] = []
        async with anyio.create_task_group() as tg:
            async def read() -> None:
                async for batch in sub.batches():
                    got.extend(e for e in batch if e.type_id == EventType.FILE_WRITE)
                    if len(got) == w.events:
                        return
            tg.start_soon(read)
            await anyio.to_thread.run_sync(w.run)
        await sub.aclose()
    assert len(got) == w.events
    stamps = [e.ts_ns for e in got]
    assert stamps == sorted(stamps)  # one writer: its events in order, whichever ring they took


async def test_stop_does_not_wait_for_a_blocking_subscriber_that_never_reads() -> None:
    cfg = PerformanceConfig(ring_buffer_size=1 << 20, batch_size=64, poll_interval=0.005)
    with anyio.fail_after(20):
        async with CaptureManager(cfg) as mgr:
            sub = await mgr.subscribe([EventType.FILE_WRITE], policy="block", max_batches=1)
            w = await follow(mgr, 20_000)
            await anyio.to_thread.run_sync(w.run)
            # The pump now waits for room in `sub`'s queue; leaving must not hang.
        assert sub.dropped > 0 or sub.delivered > 0
        await sub.aclose()


async def test_a_lines_subscriber_gets_every_event_even_what_is_pending_at_stop() -> None:
    # A blocking subscriber that reads slowly: at stop, its queue and the ring
    # still hold most of the events; they are handed out, not dropped.
    cfg = PerformanceConfig(ring_buffer_size=64 << 20, batch_size=512, poll_interval=0.005)
    async with CaptureManager(cfg) as mgr:
        await mgr.set_filter(NOTHING)
        sub = await mgr.subscribe([EventType.FILE_WRITE], policy="block", max_batches=4, lines="json")
        w = await follow(mgr, 60_000)
        data: list[bytes] = []
        counted = lost = 0
        async with anyio.create_task_group() as tg:
            async def read() -> None:
                nonlocal counted, lost
                async for lines in sub.batches():
                    assert isinstance(lines, Lines)
                    data.append(lines.data)
                    counted += lines.counts.get(EventType.FILE_WRITE.json_name, 0)
                    lost += lines.lost
                    await anyio.sleep(0.01)
            tg.start_soon(read)
            await anyio.to_thread.run_sync(w.run)
            mgr.request_stop()
        st = mgr.stats()
    events = [orjson.loads(line) for line in b"".join(data).splitlines()]
    writes_ = [e for e in events if e["type"] == EventType.FILE_WRITE.json_name]
    assert counted == len(writes_) == w.events and lost == 0
    assert {e["pid"] for e in writes_} == {w.pid} and writes_[-1]["bytes"] == 5  # its last: "done\n" to stdout
    assert st.lost_in_kernel == 0 and sum(st.dropped_at_subscribers.values()) == 0


async def test_lines_and_event_subscribers_side_by_side_get_the_same_events() -> None:
    cfg = PerformanceConfig(ring_buffer_size=16 << 20, batch_size=256, poll_interval=0.005)
    async with CaptureManager(cfg) as mgr:
        await mgr.set_filter(NOTHING)
        text = await mgr.subscribe([EventType.FILE_WRITE], policy="block", lines="text")
        plain = await mgr.subscribe([EventType.FILE_WRITE], policy="block")
        w = await follow(mgr, 5_000)
        lines: list[bytes] = []
        pids: list[int] = []
        async with anyio.create_task_group() as tg:
            async def read_text() -> None:
                async for batch in text.batches():
                    lines.extend(batch.data.splitlines())
            async def read_plain() -> None:
                async for batch in plain.batches():
                    pids.extend(e.pid for e in batch if e.type_id == EventType.FILE_WRITE)
            tg.start_soon(read_text)
            tg.start_soon(read_plain)
            await anyio.to_thread.run_sync(w.run)
            mgr.request_stop()
    assert len(pids) == len(lines) == w.events
    assert all(line.split()[1].decode() == EventType.FILE_WRITE.json_name and int(line.split()[2]) == w.pid for line in lines)
    with pytest.raises(ConfigError, match="invalid lines = 'xml'"):
        async with CaptureManager(cfg) as mgr:
            await mgr.subscribe([EventType.FILE_WRITE], lines="xml")  # type: ignore[arg-type]
