"""Nothing leaks, nothing is lost silently, faults stay contained."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from bpfcap import CaptureManager, EventFilter, EventType, PerformanceConfig

from .helpers import collect_until, open_fds, wait_until_no_bpf_objects

pytestmark = pytest.mark.anyio
# The VM suite (software emulation) runs fewer cycles: vm-tests/suite.sh sets it.
CYCLES = int(os.environ.get("BPFCAP_RELIABILITY_CYCLES", "200"))
SMALL = PerformanceConfig(ring_buffer_size=1 << 16, batch_size=64, poll_interval=0.005)
NOTHING = EventFilter(event_types=(EventType.LOSS,))


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def nothing_left() -> None:
    assert wait_until_no_bpf_objects() == {"prog": [], "map": [], "link": []}
    pinned = list(Path("/sys/fs/bpf").rglob("*")) if Path("/sys/fs/bpf").is_dir() else []
    assert not [p for p in pinned if "bpfcap" in p.name.lower()]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # a leak would not depend on the event loop
async def test_two_hundred_starts_and_stops_leak_nothing() -> None:
    async def cycle(types: list[EventType]) -> None:
        async with CaptureManager(SMALL) as mgr, await mgr.subscribe(types):
            pass

    # Every cycle loads all maps and the process programs; every 20th also the
    # file programs (whose verification takes ~0.8 s, so not all 200 of them).
    def types(i: int) -> list[EventType]:
        return [EventType.PROCESS_EXEC] + ([EventType.FILE_WRITE] if i % 20 == 0 else [])

    for i in range(10):  # warm up allocators and caches (the loader threads' arenas take a few file loads)
        await cycle(types(0))
    gc.collect()
    fds, rss = open_fds(), rss_kib()
    for i in range(CYCLES):
        await cycle(types(i))
    gc.collect()
    assert open_fds() == fds
    grown = rss_kib() - rss
    assert grown < 4 * 1024, f"RSS grew by {grown} KiB over {CYCLES} cycles"
    nothing_left()


async def test_an_exception_in_a_subscriber_detaches_everything() -> None:
    with pytest.raises(RuntimeError, match="the subscriber failed"):
        async with CaptureManager(SMALL) as mgr, await mgr.subscribe([EventType.PROCESS_EXEC]) as sub:
            await anyio.run_process(["/bin/true"])
            async for _ in sub:
                raise RuntimeError("the subscriber failed")
    nothing_left()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: signal.Signals(s).name)
def test_a_killed_bpfcap_run_leaves_nothing(bpfcap_cmd: list[str], sig: int) -> None:
    proc = subprocess.Popen([*bpfcap_cmd, "run", "--types", "process_exec,file_open,tcp_connect"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    assert "capturing" in proc.stderr.readline()
    proc.send_signal(sig)
    proc.communicate(timeout=30)
    assert proc.returncode == (0 if sig != signal.SIGKILL else -signal.SIGKILL)
    nothing_left()
    # tracefs and securityfs stay mounted and usable (bpfcap mounts them when
    # missing and never unmounts: other tools may have started using them).
    assert Path("/sys/kernel/tracing/events/syscalls").is_dir()
    assert os.path.ismount("/sys/kernel/security") and os.listdir("/sys/kernel/security")


async def test_two_managers_in_one_process_are_independent(tmp_path: Path) -> None:
    a, b = tmp_path / "bpfcapone", tmp_path / "bpfcaptwo"
    for p in (a, b):
        p.write_bytes(Path("/bin/true").read_bytes())
        p.chmod(0o755)
    async with CaptureManager(SMALL) as m1, CaptureManager(SMALL) as m2:
        await m1.set_filter(EventFilter(comm=["bpfcapone"]))
        await m2.set_filter(EventFilter(comm=["bpfcaptwo"]))
        async with await m1.subscribe([EventType.PROCESS_EXIT]) as s1, await m2.subscribe([EventType.PROCESS_EXIT]) as s2:
            for p in (a, b, a, b):
                await anyio.run_process([str(p)])
            e1 = await collect_until(s1, lambda seen: len(seen) >= 2)
            e2 = await collect_until(s2, lambda seen: len(seen) >= 2)
    assert [e.comm for e in e1] == ["bpfcapone"] * 2 and [e.comm for e in e2] == ["bpfcaptwo"] * 2
    nothing_left()


def test_two_bpfcap_processes_at_once(bpfcap_cmd: list[str], token: str) -> None:
    procs = [subprocess.Popen([*bpfcap_cmd, "run", "--types", "process_exec", "--comm", comm, "--duration", "5"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for comm in ("echo", "true")]
    for p in procs:
        assert p.stderr is not None and "capturing" in p.stderr.readline()
    subprocess.run(["/bin/echo", token], stdout=subprocess.DEVNULL)
    subprocess.run(["/bin/true", token])
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert token in outs[0] and '"comm":"echo"' in outs[0] and '"comm":"true"' not in outs[0]
    assert token in outs[1] and '"comm":"true"' in outs[1] and '"comm":"echo"' not in outs[1]


async def test_faulty_subscribers_leave_the_others_working(token: str) -> None:
    async with CaptureManager(SMALL) as mgr:
        await mgr.set_filter(NOTHING)
        good = await mgr.subscribe([EventType.PROCESS_EXEC], name="good")
        never = await mgr.subscribe([EventType.PROCESS_EXEC], name="never-reads", max_batches=1)
        cancelled = await mgr.subscribe([EventType.PROCESS_EXEC], name="cancelled")
        await mgr.set_filter(EventFilter(comm=["echo"]))
        # One consumer is cancelled in the middle of a batch.
        with anyio.move_on_after(0.2):
            async for _ in cancelled:
                await anyio.sleep(1)
        for i in range(30):
            await anyio.run_process(["/bin/echo", f"{token}-{i}"])
        got = await collect_until(good, lambda seen: sum(1 for e in seen if e.argv and e.argv[-1].startswith(token)) == 30)
        st = mgr.stats()
        for s in (good, never, cancelled):
            await s.aclose()
    assert [e.argv[-1] for e in got if e.argv and e.argv[-1].startswith(token)] == [f"{token}-{i}" for i in range(30)]
    assert st.dropped_at_subscribers.get("never-reads", 0) > 0 and st.dropped_at_subscribers.get("good", 0) == 0


async def test_a_process_gone_before_enrichment_still_yields_its_event(cgroup_v2: Path, token: str) -> None:
    d = cgroup_v2 / f"bpfcap-gone-{token}"
    d.mkdir()
    try:
        async with CaptureManager(PerformanceConfig(poll_interval=2.0, batch_size=100_000)) as mgr:
            await mgr.set_filter(NOTHING)
            async with await mgr.subscribe([EventType.PROCESS_EXEC]) as sub:
                await mgr.set_filter(EventFilter(comm=["echo"]))
                proc = subprocess.Popen(["sh", "-c", f'read _; exec /bin/echo {token}'], stdin=subprocess.PIPE,
                                        stdout=subprocess.DEVNULL)
                (d / "cgroup.procs").write_text(str(proc.pid))
                proc.communicate(b"go\n")
                # The process and its cgroup are gone before the reader looks (2 s poll interval).
                d.rmdir()
                events = await collect_until(sub, lambda seen: any(token in (e.argv or []) for e in seen), timeout=10)
                st = mgr.stats()
    finally:
        if d.exists():
            d.rmdir()
    e = next(e for e in events if token in (e.argv or []))
    assert e.container_id is None and e.cgroup_path is None and e.cgroup_id != 0
    assert st.enrich_failed >= 1


async def test_a_cgroup_deleted_while_a_filter_refers_to_it(cgroup_v2: Path, token: str) -> None:
    d = cgroup_v2 / f"bpfcap-del-{token}"
    d.mkdir()
    async with CaptureManager(SMALL) as mgr:
        await mgr.set_filter(EventFilter(cgroup_paths=[f"/{d.name}"]))
        d.rmdir()
        async with await mgr.subscribe([EventType.PROCESS_EXEC]) as sub:
            await anyio.run_process(["/bin/true"])
            with anyio.move_on_after(0.3):
                async for _ in sub:
                    raise AssertionError("nothing can match a deleted cgroup")
            await mgr.set_filter(EventFilter(comm=["echo"]))  # the capture is still fine
            await anyio.run_process(["/bin/echo", token])
            assert await collect_until(sub, lambda seen: any(token in (e.argv or []) for e in seen))


async def test_a_full_ring_for_seconds_is_counted_and_survived() -> None:
    writer = "import os\nfd = os.open('/dev/null', os.O_WRONLY)\nend = __import__('time').time() + 3\nwhile __import__('time').time() < end: os.write(fd, b'x')\n"
    async with CaptureManager(SMALL) as mgr:
        await mgr.set_filter(NOTHING)
        sub = await mgr.subscribe([EventType.FILE_WRITE], policy="block", max_batches=1)
        proc = subprocess.Popen([sys.executable, "-c", writer])
        await mgr.set_filter(EventFilter(pids=[proc.pid]))
        await anyio.to_thread.run_sync(proc.wait)  # nobody reads for 3 s: the ring stays full
        seen = 0
        with anyio.move_on_after(1):
            async for batch in sub.batches():
                seen += len(batch)
        st = mgr.stats()
        await sub.aclose()
        assert st.lost_in_kernel > 0 and st.by_type["file_write"]["kernel_ring_full"] == st.lost_in_kernel
        # And capture goes on normally afterwards.
        async with await mgr.subscribe([EventType.PROCESS_EXEC]) as again:
            await mgr.set_filter(EventFilter())
            await anyio.run_process(["/bin/true"])
            assert await collect_until(again, lambda s: any(e.type == EventType.PROCESS_EXEC for e in s))


@pytest.fixture
def cgroup_v2() -> Path:
    for p in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        if Path(p, "cgroup.controllers").exists():
            return Path(p)
    pytest.fail("no cgroup v2 hierarchy")
