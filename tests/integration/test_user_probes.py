"""User-defined probes (load_program / unload_program) against the real kernel."""

from __future__ import annotations

import os
import struct
import subprocess
from pathlib import Path

import anyio
import pytest

from bpfcap import (
    AttachError,
    BPFProgSpec,
    CaptureManager,
    ConfigError,
    EventType,
    PerformanceConfig,
    UnknownProbeError,
)

from .helpers import OFFERED, collect_until

pytestmark = pytest.mark.anyio
FAST = PerformanceConfig(ring_buffer_size=1 << 22, batch_size=256, poll_interval=0.01)
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_OBJECT = ROOT / "target/bpf/bpfel-unknown-none/release/example"


@pytest.fixture(scope="module")
def test_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small C program with a function to put a uprobe on."""
    d = tmp_path_factory.mktemp("uprobe")
    src = d / "prog.c"
    src.write_text(
        "#include <stdio.h>\n#include <stdlib.h>\n"
        "__attribute__((noinline)) long bpfcap_test_add(long a, long b, long c) { return a * 100 + b * 10 + c; }\n"
        "int main(int argc, char **argv) { printf(\"%ld\\n\", bpfcap_test_add(atol(argv[1]), atol(argv[2]), atol(argv[3]))); return 0; }\n"
    )
    subprocess.run(["gcc", "-O1", "-o", str(d / "prog"), str(src)], check=True)
    return d / "prog"


def unlink_at(path: Path) -> None:
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.unlink(path.name, dir_fd=dfd)  # unlinkat(2)
    finally:
        os.close(dfd)


async def test_any_tracepoint_is_decoded_field_by_field(tmp_path: Path, token: str) -> None:
    victim = tmp_path / token
    victim.write_text("x")
    async with CaptureManager(FAST) as mgr, await mgr.subscribe([EventType.PROBE]) as sub:
        await mgr.load_program(BPFProgSpec("unlinks", "tracepoint", "syscalls:sys_enter_unlinkat"))
        assert any(p["name"] == "unlinks" and p["mechanism"] == "tracepoint" for p in mgr.probes())
        await anyio.to_thread.run_sync(unlink_at, victim)
        events = await collect_until(sub, lambda seen: any((e.fields or {}).get("pathname") == token for e in seen))
    e = next(e for e in events if (e.fields or {}).get("pathname") == token)
    assert e.type == EventType.PROBE and e.probe == "unlinks" and e.pid == os.getpid()
    assert set(e.fields) == {"__syscall_nr", "dfd", "pathname", "flag"} and e.fields["flag"] == 0
    assert e.to_dict()["fields"]["pathname"] == token


async def test_uprobe_and_uretprobe_see_arguments_and_return_value(test_program: Path) -> None:
    target = f"{test_program}:bpfcap_test_add"
    async with CaptureManager(FAST) as mgr, await mgr.subscribe([EventType.PROBE]) as sub:
        await mgr.load_program(BPFProgSpec("add", "uprobe", target))
        await mgr.load_program(BPFProgSpec("add_ret", "uretprobe", target))
        r = await anyio.run_process([str(test_program), "4", "5", "6"])
        assert r.stdout.strip() == b"456"
        events = await collect_until(sub, lambda seen: {e.probe for e in seen} >= {"add", "add_ret"})
    call = next(e for e in events if e.probe == "add")
    ret = next(e for e in events if e.probe == "add_ret")
    assert call.args[:3] == [4, 5, 6] and call.comm == "prog"
    assert ret.ret == 456 and ret.pid == call.pid


async def test_raw_tracepoint_arguments(token: str) -> None:
    async with CaptureManager(FAST) as mgr, await mgr.subscribe([EventType.PROBE]) as sub:
        await mgr.load_program(BPFProgSpec("forks", "raw_tracepoint", "sched_process_fork"))
        proc = await anyio.open_process(["/bin/true"])
        await proc.wait()
        events = await collect_until(sub, lambda seen: any(e.pid == os.getpid() for e in seen))
    e = next(e for e in events if e.pid == os.getpid())
    assert e.probe == "forks" and len(e.args) == 2  # (parent, child) task pointers
    assert all(a >= 1 << 63 for a in e.args)  # kernel addresses (top half, 4- or 5-level paging)


async def test_a_users_own_object_delivers_raw_records() -> None:
    assert EXAMPLE_OBJECT.is_file(), "built by `make build` (bpf-rs/src/bin/example.rs)"
    spec = BPFProgSpec("mine", "tracepoint", "syscalls:sys_enter_getppid", object=str(EXAMPLE_OBJECT), program="example_getppid")
    async with CaptureManager(FAST) as mgr, await mgr.subscribe([EventType.PROBE]) as sub:
        await mgr.load_program(spec)
        await anyio.to_thread.run_sync(os.getppid)
        events = await collect_until(sub, lambda seen: any(e.raw and struct.unpack("<QQ", e.raw)[1] == os.getpid() for e in seen))
    e = next(e for e in events if e.raw and struct.unpack("<QQ", e.raw)[1] == os.getpid())
    assert e.probe == "mine" and e.program == "example_getppid"
    assert e.raw[:8] == b"!elpmaxe"  # the program's magic, little-endian
    assert e.to_dict()["raw"] == e.raw.hex()


async def test_a_users_malformed_records_are_counted_not_delivered() -> None:
    """example_malformed writes an empty record, an 80 KiB one and a good one."""
    spec = BPFProgSpec("bad", "tracepoint", "syscalls:sys_enter_getpgid", object=str(EXAMPLE_OBJECT),
                       program="example_malformed")
    async with CaptureManager(FAST) as mgr, await mgr.subscribe([EventType.PROBE]) as sub:
        await mgr.load_program(spec)
        before = mgr.stats().decode_errors
        for _ in range(3):
            with pytest.raises(ProcessLookupError):
                await anyio.to_thread.run_sync(os.getpgid, 0x0BAD_F00D)
        events = await collect_until(sub, lambda seen: len(seen) >= 3)
        with anyio.move_on_after(0.3):
            async for e in sub:
                events.append(e)
        errors = mgr.stats().decode_errors - before
    assert [e.raw for e in events] == [b"good!\0\0\0"] * 3
    assert errors == 6  # per call: one empty, one oversized


async def test_kprobe_and_lsm_user_probes(tmp_path: Path, token: str) -> None:
    async with CaptureManager(FAST) as mgr, await mgr.subscribe([EventType.PROBE]) as sub:
        if "kprobe" not in OFFERED:
            with pytest.raises(AttachError, match="kprobe"):
                await mgr.load_program(BPFProgSpec("k", "kprobe", "do_unlinkat"))
        else:
            await mgr.load_program(BPFProgSpec("k", "kprobe", "do_unlinkat"))
        if "lsm" not in OFFERED:
            with pytest.raises(AttachError, match="lsm|LSM|refused"):
                await mgr.load_program(BPFProgSpec("l", "lsm", "path_unlink"))
        else:
            await mgr.load_program(BPFProgSpec("l", "lsm", "path_unlink"))
        if not {"kprobe", "lsm"} & OFFERED:
            return
        victim = tmp_path / token
        victim.write_text("x")
        await anyio.to_thread.run_sync(unlink_at, victim)
        want = {n for n, m in (("k", "kprobe"), ("l", "lsm")) if m in OFFERED}
        events = await collect_until(sub, lambda seen: {e.probe for e in seen if e.pid == os.getpid()} >= want)
    mine = {e.probe: e for e in events if e.pid == os.getpid()}
    if "k" in want:
        assert len(mine["k"].args) == 2  # do_unlinkat(int dfd, struct filename *name)
    if "l" in want:
        assert len(mine["l"].args) == 2  # path_unlink(const struct path *dir, struct dentry *dentry)


@pytest.mark.parametrize(
    ("spec", "error", "message"),
    [
        (dict(name="a", type="kprobe", target="no_such_kernel_function_xyz"), AttachError, "no such kernel function"),
        (dict(name="b", type="uprobe", target="/bin/true:no_such_symbol_xyz"), AttachError, "no_such_symbol_xyz"),
        (dict(name="c", type="uprobe", target="/no/such/binary:main"), AttachError, "not found"),
        (dict(name="d", type="tracepoint", target="nosuch:tracepoint"), AttachError, "no such tracepoint"),
        (dict(name="e", type="raw_tracepoint", target="no_such_raw_tp"), AttachError, "no such raw tracepoint"),
        (dict(name="f", type="tracepoint", target="syscalls:sys_enter_getppid", object="/etc/passwd", program="x"),
         ConfigError, "not ELF"),
        (dict(name="g", type="tracepoint", target="syscalls:sys_enter_getppid", object=str(EXAMPLE_OBJECT), program="nope"),
         ConfigError, "program = nope: a program of .*example_getppid"),
        (dict(name="h", type="tracepoint", target="syscalls:sys_enter_getppid", object="/no/such/file.o", program="p"),
         ConfigError, "readable BPF ELF object"),
    ],
)
async def test_bad_specs_fail_clearly_and_disturb_nothing(spec: dict, error: type, message: str, tmp_path: Path, token: str) -> None:
    async with CaptureManager(FAST) as mgr, await mgr.subscribe([EventType.PROBE, EventType.PROCESS_EXEC]) as sub:
        await mgr.load_program(BPFProgSpec("good", "tracepoint", "syscalls:sys_enter_unlinkat"))
        with pytest.raises(error, match=message):
            await mgr.load_program(BPFProgSpec(**spec))
        assert {p["name"] for p in mgr.probes()} == {"sched_process_exec", "good"}
        victim = tmp_path / token
        victim.write_text("x")
        await anyio.to_thread.run_sync(unlink_at, victim)
        proc = await anyio.open_process(["/bin/echo", token])
        await proc.wait()
        events = await collect_until(sub, lambda seen: (
            any((e.fields or {}).get("pathname") == token for e in seen) and any(token in (e.argv or []) for e in seen)
        ))
    assert events


async def test_unload_program_stops_its_events(tmp_path: Path, token: str) -> None:
    async with CaptureManager(FAST) as mgr, await mgr.subscribe([EventType.PROBE, EventType.PROCESS_EXEC]) as sub:
        await mgr.load_program(BPFProgSpec("unlinks", "tracepoint", "syscalls:sys_enter_unlinkat"))
        await mgr.load_program(BPFProgSpec("tcp_connect"))  # a built-in probe by name
        assert {p["name"] for p in mgr.probes()} >= {"unlinks", "tcp_connect"}
        await mgr.unload_program("unlinks")
        await mgr.unload_program("tcp_connect")
        assert {p["name"] for p in mgr.probes()} == {"sched_process_exec"}
        with pytest.raises(UnknownProbeError, match="no program named 'unlinks'"):
            await mgr.unload_program("unlinks")
        victim = tmp_path / token
        victim.write_text("x")
        await anyio.to_thread.run_sync(unlink_at, victim)
        proc = await anyio.open_process(["/bin/echo", token])
        await proc.wait()
        events = await collect_until(sub, lambda seen: any(token in (e.argv or []) for e in seen))
    assert not [e for e in events if e.type == EventType.PROBE]
