"""Every built-in probe against the real kernel: each test does something itself
and checks the exact fields of the event it caused, and the mechanism used."""

from __future__ import annotations

import errno
import itertools
import os
import re
import socket
import struct
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import anyio
import orjson
import pytest

from bpfcap import CaptureManager, EventType, PerformanceConfig

from .helpers import PLANS, collect_until, expected_mechanism, strace_changes, strace_io

pytestmark = pytest.mark.anyio
FAST = PerformanceConfig(ring_buffer_size=1 << 24, batch_size=256, poll_interval=0.01)


# The VM suite checks each fallback in the same pytest run (vm-tests/suite.sh):
# every test here runs once per entry of BPFCAP_TEST_FORCINGS, a ";"-separated
# list of mechanism sets to disable ("" = none). Unset: once, as the
# environment's BPFCAP_DISABLE_MECHANISMS says.
FORCINGS = os.environ["BPFCAP_TEST_FORCINGS"].split(";") if "BPFCAP_TEST_FORCINGS" in os.environ else [None]


@pytest.fixture(autouse=True, params=FORCINGS, ids=lambda f: "as-configured" if f is None else f"disabled:{f or 'none'}")
def forcing(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The mechanisms disabled for this test (the manager reads them from the environment)."""
    if request.param is not None:
        monkeypatch.setenv("BPFCAP_DISABLE_MECHANISMS", request.param)
    return os.environ.get("BPFCAP_DISABLE_MECHANISMS", "")


def check_mechanism(mgr: CaptureManager, probe: str) -> dict[str, Any]:
    status = next(p for p in mgr.probes() if p["name"] == probe)
    plans = PLANS[probe]
    assert status["mechanism"] in plans
    # Every plan before the winner was tried and said why it was skipped.
    assert len(status["skipped"]) == plans.index(status["mechanism"])
    want = expected_mechanism(probe)
    if want is not None:
        assert status["mechanism"] == want, status["skipped"]
    record({"probe": probe, "disabled": os.environ.get("BPFCAP_DISABLE_MECHANISMS", ""),
            "mechanism": status["mechanism"]})
    return status


def record(result: dict[str, Any]) -> None:
    """The VM runner's summary tables are made of these (vm-tests/summary.py)."""
    if out := os.environ.get("BPFCAP_RESULTS_DIR"):
        with open(Path(out, "mechanisms.jsonl"), "ab") as f:
            f.write(orjson.dumps(result) + b"\n")


async def capture(types: list[EventType], action: Callable[[], Any], done: Callable[[list[Any]], bool]) -> tuple[list[Any], Any, CaptureManager]:
    async with CaptureManager(FAST) as mgr, await mgr.subscribe(types) as sub:
        result = await anyio.to_thread.run_sync(action)
        events = await collect_until(sub, done)
        probes = mgr.probes()
    mgr.probes = lambda: probes  # type: ignore[method-assign]  # keep them for check_mechanism
    return events, result, mgr


def mine(events: list[Any], **fields: Any) -> list[Any]:
    return [e for e in events if all(getattr(e, k) == v for k, v in fields.items())]


# -- files -----------------------------------------------------------------------------


@pytest.fixture
def token_file(tmp_path: Path, token: str) -> Path:
    return (tmp_path / f"{token}.data").resolve()


async def test_file_open_write_read_and_permission(token_file: Path) -> None:
    data = b"x" * 1234
    pid = os.getpid()

    def act() -> tuple[int, int]:
        fd = os.open(token_file, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        os.write(fd, data)
        os.close(fd)
        fd2 = os.open(token_file, os.O_RDONLY)
        assert os.read(fd2, 10_000) == data
        os.close(fd2)
        return fd, fd2

    path = str(token_file)
    types = [EventType.FILE_OPEN, EventType.FILE_WRITE, EventType.FILE_READ, EventType.FILE_PERMISSION]
    events, (wfd, rfd), mgr = await capture(
        types, act, lambda seen: any(e.type == EventType.FILE_READ and e.path == path for e in seen)
    )
    opens = mine(events, type=EventType.FILE_OPEN, path=path, pid=pid)
    assert [(e.flags & os.O_ACCMODE) for e in opens] == [os.O_WRONLY, os.O_RDONLY]
    writes = mine(events, type=EventType.FILE_WRITE, path=path, pid=pid)
    reads = mine(events, type=EventType.FILE_READ, path=path, pid=pid)
    assert [e.bytes for e in writes] == [len(data)]
    assert [e.bytes for e in reads][:1] == [len(data)]
    perms = mine(events, type=EventType.FILE_PERMISSION, path=path, pid=pid)
    assert {e.mask for e in perms} >= {2, 4}  # MAY_WRITE, MAY_READ
    mech = {p: check_mechanism(mgr, p)["mechanism"] for p in ("vfs_open", "vfs_write", "vfs_read", "file_permission")}
    for e in opens + writes + reads:
        assert e.path_truncated is False and e.comm and e.tid
        # Only the syscall tracepoints see the descriptor.
        if mech[{EventType.FILE_OPEN: "vfs_open", EventType.FILE_WRITE: "vfs_write", EventType.FILE_READ: "vfs_read"}[e.type]] == "tracepoint":
            assert e.fd in (wfd, rfd)
        else:
            assert e.fd is None


async def test_every_way_to_open_a_file_is_reported(tmp_path: Path, token: str) -> None:
    # open(2), openat(2), creat(2) (GNU tar makes its archive with it); strace agrees.
    d = tmp_path.resolve()
    script = (
        "import ctypes, os, sys\n"
        "d, t = sys.argv[1], sys.argv[2]\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "assert libc.creat(f'{d}/{t}-creat'.encode(), 0o600) >= 0\n"
        "os.open(f'{d}/{t}-openat', os.O_CREAT | os.O_WRONLY, 0o600)\n"
        "assert libc.syscall(2, f'{d}/{t}-open'.encode(), os.O_CREAT | os.O_WRONLY, 0o600) >= 0  # open(2)\n"
    )
    log = str(tmp_path / "strace.log")
    traced: list[Any] = []

    def act() -> None:
        traced.append(strace_io(["python3", "-c", script, str(d), token], log, calls="open,openat,creat"))

    names = [f"{d}/{token}-{how}" for how in ("creat", "openat", "open")]
    events, _, _ = await capture(
        [EventType.FILE_OPEN], act, lambda seen: {e.path for e in seen} >= set(names))
    proc, _ = traced[0]
    assert proc.returncode == 0, proc.stderr
    strace_calls = [line.split("(")[0] for p in sorted(tmp_path.glob("strace.log.*")) for line in p.read_text().splitlines()
                    if token in line]
    assert strace_calls == ["creat", "openat", "open"]
    # (kprobe and fentry on overlayfs also see the backing file's open, by its own path: issue 14)
    assert [e.path for e in events if e.path in names] == names


async def test_every_read_and_write_variant_is_reported_with_its_bytes(tmp_path: Path, token: str) -> None:
    # sqlite does its I/O with pread64/pwrite64; writev/readv and their
    # positioned forms are common too. strace -y gives the reference.
    d = tmp_path.resolve()
    script = (
        "import os, sys\n"
        "d, t = sys.argv[1], sys.argv[2]\n"
        "fd = os.open(f'{d}/{t}.db', os.O_CREAT | os.O_RDWR, 0o600)\n"
        "os.pwrite(fd, b'a' * 11, 0); os.writev(fd, [b'b' * 3, b'c' * 4]); os.pwritev(fd, [b'd' * 5], 100)\n"
        "os.pwritev(fd, [b'e' * 6], 200, os.RWF_DSYNC)\n"
        "os.pread(fd, 13, 0); os.lseek(fd, 0, 0); os.readv(fd, [bytearray(2), bytearray(9)])\n"
        "os.preadv(fd, [bytearray(17)], 1); os.preadv(fd, [bytearray(19)], 2, os.RWF_HIPRI)\n"
        "open(f'{d}/{t}.end', 'w').write('.')\n"  # (seen by every mechanism: the end)
    )
    calls = "pread64,pwrite64,readv,writev,preadv,pwritev,preadv2,pwritev2"
    log = str(tmp_path / "strace.log")
    traced: list[Any] = []

    def act() -> None:
        traced.append(strace_io(["python3", "-c", script, str(d), token], log, calls=calls))

    name = f"{d}/{token}.db"
    events, _, mgr = await capture(
        [EventType.FILE_READ, EventType.FILE_WRITE], act,
        lambda seen: any(e.path == f"{d}/{token}.end" and e.type == EventType.FILE_WRITE for e in seen))
    proc, calls_seen = traced[0]
    assert proc.returncode == 0, proc.stderr
    seen_by_strace = [c for c in calls_seen if c[2] == name]
    want = [("read" if "read" in call else "write", path, ret) for _, call, path, ret in seen_by_strace]
    assert len(want) == 8
    got = [("read" if e.type == EventType.FILE_READ else "write", e.path, e.bytes) for e in events if e.path == name]
    # (kprobe and fentry see readv and the others, which bypass vfs_read and
    # vfs_write, through their syscalls: the plan must not leave them out)
    for probe in ("vfs_read", "vfs_write"):
        assert check_mechanism(mgr, probe)
        assert [p["left_out"] for p in mgr.probes() if p["name"] == probe] == [[]]
    assert got == want


async def test_a_copy_is_a_read_of_one_file_and_a_write_of_the_other(tmp_path: Path, token: str) -> None:
    # GNU cp copies with copy_file_range; sendfile and splice do the same in
    # one syscall. Each is both sides' bytes, as strace -y sees them.
    d = tmp_path.resolve()
    (d / f"{token}.src").write_bytes(os.urandom(3 << 20))
    script = (
        "import os, sys\n"
        "d, t = sys.argv[1], sys.argv[2]\n"
        "src = os.open(f'{d}/{t}.src', os.O_RDONLY)\n"
        "out = os.open(f'{d}/{t}.sendfile', os.O_CREAT | os.O_WRONLY, 0o600)\n"
        "os.sendfile(out, src, 0, 5000)\n"
        "out2 = os.open(f'{d}/{t}.range', os.O_CREAT | os.O_WRONLY, 0o600)\n"
        "os.copy_file_range(src, out2, 7000, 0)\n"
        "r, w = os.pipe(); os.splice(src, w, 3000, offset_src=0); os.read(r, 3000)\n"
    )
    log = str(tmp_path / "strace.log")
    traced: list[Any] = []

    def act() -> None:
        calls = "copy_file_range,sendfile,splice"
        traced.append(strace_io(["cp", f"{d}/{token}.src", f"{d}/{token}.cp"], log + "-cp", calls=calls))
        traced.append(strace_io(["python3", "-c", script, str(d), token], log, calls=calls))

    cache: list[list[tuple[str, str, int]]] = []

    def expected() -> list[tuple[str, str, int]]:
        if cache:
            return cache[0]
        want = []
        for p in sorted(tmp_path.glob("strace.log*.*")):
            for line in p.read_text().splitlines():
                m = re.match(r"(\w+)\((.*)\)\s+=\s+(\d+)", line)
                if m and m[1] in ("copy_file_range", "sendfile", "splice"):
                    fds = re.findall(r"\d+<([^>]*)>", m[2])
                    src, dst = (fds[1], fds[0]) if m[1] == "sendfile" else (fds[0], fds[1])
                    want += [("read", src, int(m[3])), ("write", dst, int(m[3]))]
        cache.append(sorted(want))
        return cache[0]

    def io(events: list[Any], paths: set[str]) -> list[tuple[str, str, int]]:
        return sorted(("read" if e.type == EventType.FILE_READ else "write", e.path, e.bytes)
                      for e in events if e.path in paths and e.bytes is not None)

    events, _, _ = await capture(
        [EventType.FILE_READ, EventType.FILE_WRITE], act,
        lambda seen: len(traced) == 2 and not Counter(expected()) - Counter(io(seen, {p for _, p, _ in expected()})))
    for proc, _ in traced:
        assert proc.returncode == 0, proc.stderr
    want = expected()
    paths = {p for _, p, _ in want}
    assert {f"{d}/{token}.src", f"{d}/{token}.cp", f"{d}/{token}.sendfile", f"{d}/{token}.range"} <= paths
    assert sum(n for how, p, n in want if p == f"{d}/{token}.cp") == 3 << 20
    # (the pipe's read(2) is not in strace's list: what is not a copy is left out)
    assert [x for x in io(events, paths) if x in want] == want


async def test_files_used_in_turn_each_get_their_own_path(tmp_path: Path, token: str) -> None:
    # The programs remember the last few paths per CPU: more files than that,
    # in turn and in alternation (as a copy reads one and writes the other).
    paths = [tmp_path.resolve() / f"{token}-{i}.data" for i in range(6)]
    order = [i % 6 for i in range(60)] + [i % 2 for i in range(40)]

    def act() -> None:
        fds = [os.open(p, os.O_CREAT | os.O_RDWR, 0o600) for p in paths]
        for i in order:
            os.write(fds[i], bytes([65 + i]) * (i + 1))
        for fd in fds:
            os.close(fd)

    names = [str(p) for p in paths]
    events, _, _ = await capture(
        [EventType.FILE_WRITE, EventType.FILE_PERMISSION], act,
        lambda seen: len([e for e in seen if e.type == EventType.FILE_WRITE and e.path in names]) >= len(order))
    writes = [e for e in events if e.type == EventType.FILE_WRITE and e.pid == os.getpid() and token in (e.path or "")]
    assert [(e.path, e.bytes) for e in writes] == [(names[i], i + 1) for i in order]
    perms = [e for e in events if e.type == EventType.FILE_PERMISSION and e.pid == os.getpid() and token in (e.path or "")]
    # The LSM hook and fentry also see overlayfs's backing file (VMs: a second
    # event per write whose path is within the upper layer; issue 14).
    seen = [path for path, _ in itertools.groupby(e.path for e in perms if e.mask == 2 and e.path in names)]
    assert seen == [names[i] for i in order]


async def test_each_read_and_write_has_its_permission_check_at_the_time_it_was_made(tmp_path: Path, token: str) -> None:
    # On the syscall tracepoints the check of a file that never waits travels
    # with the syscall's own record; it must still be one event per syscall,
    # stamped when the syscall started, also when the syscall fails.
    path, folder = tmp_path.resolve() / f"{token}.data", tmp_path.resolve() / f"{token}.dir"
    folder.mkdir()
    started: list[int] = []

    def act() -> None:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        for i in range(20):
            started.append(time.monotonic_ns())
            os.write(fd, b"y" * (i + 1))
        os.lseek(fd, 0, os.SEEK_SET)
        for i in range(20):
            started.append(time.monotonic_ns())
            os.read(fd, i + 1)
        os.close(fd)
        dfd = os.open(folder, os.O_RDONLY)
        started.append(time.monotonic_ns())
        with pytest.raises(IsADirectoryError):
            os.read(dfd, 10)
        os.close(dfd)

    names = {str(path), str(folder)}
    types = [EventType.FILE_WRITE, EventType.FILE_READ, EventType.FILE_PERMISSION]
    events, _, mgr = await capture(
        types, act, lambda seen: any(e.type == EventType.FILE_PERMISSION and e.path == str(folder) for e in seen))
    mine_ = [e for e in events if e.pid == os.getpid() and e.path in names]
    io = [e for e in mine_ if e.type != EventType.FILE_PERMISSION]
    want = [(EventType.FILE_WRITE, i + 1) for i in range(20)] + [(EventType.FILE_READ, i + 1) for i in range(20)]
    assert [(e.type, e.bytes) for e in io] == want
    checks = [e for e in mine_ if e.type == EventType.FILE_PERMISSION]
    syscalls = [(2, str(path))] * 20 + [(4, str(path))] * 20 + [(4, str(folder))]  # the last read fails
    if check_mechanism(mgr, "file_permission")["mechanism"] == "tracepoint":
        assert [(e.mask, e.path) for e in checks] == syscalls
        assert all(c.ts_ns < e.ts_ns for c, e in zip(checks, io))  # made at the entry, not the exit
    # (LSM and fentry may see a check more than once per syscall.) Each
    # syscall's check lies between its start and its own event.
    ends: list[int | None] = [e.ts_ns for e in io] + [None]  # the failed read has none
    for (mask, name), start, end in zip(syscalls, started, ends, strict=True):
        assert any(c.mask == mask and c.path == name and start <= c.ts_ns and (end is None or c.ts_ns <= end) for c in checks)


async def test_a_read_that_waits_has_its_permission_check_reported_while_it_waits() -> None:
    # A pipe (unlike a file) can keep a read waiting: its check is not held
    # back until the read returns.
    rfd, wfd = os.pipe()
    reader_tid: list[int] = []

    def block() -> bytes:
        reader_tid.append(threading.get_native_id())
        return os.read(rfd, 5)

    try:
        async with CaptureManager(FAST) as mgr, await mgr.subscribe([EventType.FILE_PERMISSION]) as sub:
            async with anyio.create_task_group() as tg:
                result: list[bytes] = []

                async def reader() -> None:
                    result.append(await anyio.to_thread.run_sync(block))

                tg.start_soon(reader)
                seen = await collect_until(sub, lambda seen: bool(reader_tid) and any(e.tid == reader_tid[0] and e.mask == 4 for e in seen))
                assert not result  # still waiting
                os.write(wfd, b"hello")
            assert result == [b"hello"]
        assert any(e.tid == reader_tid[0] and e.mask == 4 for e in seen)
    finally:
        os.close(rfd)
        os.close(wfd)


async def test_pipe_io_is_named_and_counted_as_strace_sees_it(tmp_path: Path) -> None:
    # A pipe is not a file at "/": its events name it as strace -y does, and
    # carry the same bytes.
    log = str(tmp_path / "strace.log")
    traced: list[Any] = []

    def act() -> None:
        traced.append(strace_io(["sh", "-c", "seq 30000 | wc -l > /dev/null"], log))

    def done(seen: list[Any]) -> bool:
        if not traced:
            return False
        pipes = [path for _, _, path, ret in traced[0][1] if path.startswith("pipe:[") and ret >= 0]
        names = set(pipes)
        return len([e for e in seen if e.path in names]) >= len(pipes)

    events, _, mgr = await capture([EventType.FILE_READ, EventType.FILE_WRITE], act, done)
    proc, calls = traced[0]
    assert proc.returncode == 0, proc.stderr
    pids = {pid for pid, *_ in calls}
    want = sorted((pid, call, path, ret) for pid, call, path, ret in calls if path.startswith("pipe:[") and ret >= 0)
    got = sorted((e.pid, "read" if e.type == EventType.FILE_READ else "write", e.path, e.bytes)
                 for e in events if e.pid in pids and e.path in {w[2] for w in want})
    assert want and got == want
    assert not [e for e in events if e.pid in pids and e.path == "/"]
    check_mechanism(mgr, "vfs_read")


async def test_socket_io_is_named_by_the_socket_not_as_a_file() -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect(receiver.getsockname())
    name = f"socket:[{os.fstat(s.fileno()).st_ino}]"
    try:
        events, _, _ = await capture(
            [EventType.FILE_WRITE], lambda: os.write(s.fileno(), b"0123456789"),
            lambda seen: any(e.path == name for e in seen))
    finally:
        s.close()
        receiver.close()
    assert [(e.path, e.bytes) for e in mine(events, pid=os.getpid()) if e.path in (name, "/")] == [(name, 10)]


async def test_a_renamed_file_or_directory_is_reported_by_its_new_name(tmp_path: Path, token: str) -> None:
    # The programs cache paths for a moment; a rename (of the file, or of a
    # directory above it) must not leave them naming it by its old name.
    # strace -y, an independent tracer, names each fd's file.
    d = tmp_path.resolve()
    script = (
        "import os, sys\n"
        "d, t = sys.argv[1], sys.argv[2]\n"
        "open(f'{d}/{t}.tmp', 'w').write('x' * 100)\n"
        "os.rename(f'{d}/{t}.tmp', f'{d}/{t}.txt')\n"
        "open(f'{d}/{t}.txt').read()\n"
        "os.mkdir(f'{d}/{t}-a'); open(f'{d}/{t}-a/f', 'w').write('y' * 7)\n"
        "os.rename(f'{d}/{t}-a', f'{d}/{t}-b')\n"
        "open(f'{d}/{t}-b/f').read()\n"
    )
    log = str(tmp_path / "strace.log")
    traced: list[Any] = []

    def act() -> None:
        traced.append(strace_io(["python3", "-c", script, str(d), token], log))

    events, _, _ = await capture(
        [EventType.FILE_READ, EventType.FILE_WRITE], act,
        lambda seen: any(e.path == f"{d}/{token}-b/f" and e.type == EventType.FILE_READ and e.bytes for e in seen))
    proc, calls = traced[0]
    assert proc.returncode == 0, proc.stderr
    want = [(call, path, ret) for _, call, path, ret in calls if token in path and ret > 0]
    got = [("read" if e.type == EventType.FILE_READ else "write", e.path, e.bytes)
           for e in events if token in (e.path or "") and e.bytes]
    assert want == [("write", f"{d}/{token}.tmp", 100), ("read", f"{d}/{token}.txt", 100),
                    ("write", f"{d}/{token}-a/f", 7), ("read", f"{d}/{token}-b/f", 7)]
    assert got == want


async def test_names_that_are_not_utf8_keep_their_bytes(tmp_path: Path, token: str) -> None:
    """A file name and an argument that are not UTF-8: the text has U+FFFD,
    and `path_raw`/`argv_raw` give the bytes the syscalls were given."""
    name = os.fsencode(tmp_path) + b"/caf\xe9-" + token.encode()
    arg = b"\xff\xfe" + token.encode()

    def act() -> None:
        os.close(os.open(os.devnull, os.O_RDONLY))  # (a name that is UTF-8)
        fd = os.open(name, os.O_CREAT | os.O_WRONLY, 0o600)
        os.write(fd, b"x")
        os.close(fd)
        subprocess.run([b"/bin/true", arg], check=True)

    events, _, _ = await capture(
        [EventType.FILE_OPEN, EventType.FILE_WRITE, EventType.PROCESS_EXEC], act,
        lambda seen: any(e.type == EventType.PROCESS_EXEC and token in "".join(e.argv) for e in seen),
    )
    # (kprobe and fentry on overlayfs also see the backing file, by its own path: issue 14)
    raw = [e for e in events if e.type in (EventType.FILE_OPEN, EventType.FILE_WRITE) and e.pid == os.getpid()
           and e.path == name.decode(errors="replace")]
    assert {e.type for e in raw} == {EventType.FILE_OPEN, EventType.FILE_WRITE}
    for e in raw:
        assert bytes.fromhex(e.path_raw) == name
        assert orjson.loads(e.to_json())["path_raw"] == e.path_raw
    (ex,) = [e for e in events if e.type == EventType.PROCESS_EXEC and token in "".join(e.argv)]
    assert ex.argv == ["/bin/true", arg.decode(errors="replace")]
    assert [bytes.fromhex(a) for a in ex.argv_raw] == [b"/bin/true", arg] and ex.filename_raw is None
    plain = mine(events, type=EventType.FILE_OPEN, path=os.devnull, pid=os.getpid())
    assert plain and all(e.path_raw is None and "path_raw" not in e.to_dict() for e in plain)


async def test_deep_paths_are_complete_and_long_ones_say_so(tmp_path: Path, token: str) -> None:
    deep = tmp_path.resolve().joinpath(*[f"d{i}" for i in range(20)])
    deep.mkdir(parents=True)
    target = deep / f"{token}.txt"
    long_dir = tmp_path.resolve().joinpath(*["L" * 200 for _ in range(12)])
    long_dir.mkdir(parents=True)
    long_target = long_dir / f"{token}-long.txt"

    def act() -> None:
        target.write_bytes(b"1")
        long_target.write_bytes(b"1")

    events, _, _ = await capture(
        [EventType.FILE_OPEN], act, lambda seen: any(token in (e.path or "") and "long" in e.path for e in seen)
    )
    assert [e.path for e in events if e.path == str(target)] == [str(target)]
    long = [e for e in events if f"{token}-long.txt" in (e.path or "")]
    assert long and long[0].path_truncated is True
    assert not long[0].path.startswith("/") and str(long_target).endswith(long[0].path)


# -- file changes ----------------------------------------------------------------------

CHANGES = [EventType.FILE_DELETE, EventType.FILE_RENAME, EventType.FILE_MKDIR]


async def test_file_changes_of_real_programs_are_what_strace_sees(tmp_path: Path, token: str) -> None:
    # coreutils (mkdir -p, mv, rm -r, rmdir), git (its lock files renamed
    # into place), and Python's dirfd-relative forms, failures included;
    # strace -yy gives the reference (paths made absolute from its dirfds).
    d = tmp_path.resolve()
    t = f"{d}/{token}"
    shell = (
        f"mkdir -p {token}/a/b/c && touch {token}/a/f1 {token}/a/b/f2 && mv {token}/a/f1 {token}/a/g1"
        f" && mv {token}/a/b {token}/moved && rm -r {token}/moved; rmdir {token}/a/none; mv {token}/none {token}/x;"
        f" mkdir {token}/a; mkdir {token}/repo && echo hi > {token}/repo/f"
    )
    git = "git init -q && git add f && git -c user.name=t -c user.email=t@t commit -qm m && git rm -q f"
    script = (
        "import os, sys\n"
        "t = sys.argv[1]\n"
        "fd = os.open(t + '/a', os.O_RDONLY | os.O_DIRECTORY)\n"
        "os.mkdir('c', dir_fd=fd); os.rename('g1', 'c/g2', src_dir_fd=fd, dst_dir_fd=fd)\n"
        "os.rename(t + '/a/c/g2', 'a/./c/../g3')\n"  # relative to the cwd, which is t's parent
        "os.unlink('g3', dir_fd=fd); os.rmdir('c', dir_fd=fd)\n"
        "try: os.unlink('gone', dir_fd=fd)\n"
        "except FileNotFoundError: pass\n"
        "os.mkdir(t + '/end')\n"
    )
    log = str(tmp_path / "strace.log")
    traced: list[Any] = []

    def act() -> None:
        traced.append(strace_changes(["sh", "-c", shell], log + "-sh", cwd=str(d)))
        traced.append(strace_changes(["sh", "-c", git], log + "-git", cwd=f"{t}/repo"))
        traced.append(strace_changes(["python3", "-c", script.replace("'a/", f"'{token}/a/"), t], log + "-py", cwd=str(d)))

    events, _, mgr = await capture(CHANGES, act, lambda seen: any(e.path == f"{t}/end" for e in seen))
    for (proc, _), what in zip(traced, ("sh", "git", "python")):
        assert proc.returncode == 0, (what, proc.stderr)
    want = sorted((c for _, seen in traced for c in seen if c[1].startswith(t)), key=str)
    got = sorted(((e.type_name, e.path, e.new_path, e.error) for e in events if e.path.startswith(t)), key=str)
    # (what each part must have shown, so that agreement is not agreement on nothing)
    assert ("file_rename", f"{t}/a/b", f"{t}/moved", None) in want
    assert ("file_delete", f"{t}/a/none", None, errno.ENOENT) in want
    assert any(c[0] == "file_rename" and c[2] == f"{t}/repo/.git/index" for c in want)
    assert ("file_rename", f"{t}/a/c/g2", f"{t}/a/g3", None) in want
    assert got == want
    for probe in ("file_delete", "file_rename", "file_mkdir"):
        check_mechanism(mgr, probe)
    dirs = {e.path: e.dir for e in events if e.type == EventType.FILE_DELETE and e.error is None}
    assert (dirs[f"{t}/moved/c"], dirs[f"{t}/moved/f2"]) == (True, False)
    assert {e.mode for e in events if e.type == EventType.FILE_MKDIR and e.path == f"{t}/end"} == {0o777}


# -- network ---------------------------------------------------------------------------


@pytest.mark.parametrize("family,host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
async def test_tcp_connect_and_close(family: int, host: str) -> None:
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.bind((host, 0))
    listener.listen()
    lport = listener.getsockname()[1]
    last = socket.socket(family, socket.SOCK_STREAM)
    last.bind((host, 0))
    last.listen()
    last_port = last.getsockname()[1]

    def act() -> int:
        client = socket.socket(family, socket.SOCK_STREAM)
        client.connect((host, lport))
        conn, _ = listener.accept()
        cport = client.getsockname()[1]
        client.close()
        conn.close()
        listener.close()  # a listening socket's close is no connection's
        # (then a connection whose close says that all before it was read)
        with socket.create_connection((host, last_port)):
            pass
        return cport

    try:
        events, cport, mgr = await capture(
            [EventType.TCP_CONNECT, EventType.TCP_CLOSE],
            act,
            lambda seen: any(e.type == EventType.TCP_CLOSE and e.dport == last_port for e in seen),
        )
    finally:
        listener.close()
        last.close()
    fam = "ipv4" if family == socket.AF_INET else "ipv6"
    connects = mine(events, type=EventType.TCP_CONNECT, dport=lport)
    assert [(e.family, e.saddr, e.daddr, e.sport, e.pid) for e in connects] == [(fam, host, host, cport, os.getpid())]
    closes = [(e.sport, e.dport) for e in mine(events, type=EventType.TCP_CLOSE, pid=os.getpid()) if lport in (e.sport, e.dport)]
    assert sorted(closes) == sorted([(cport, lport), (lport, cport)])  # the client's close and the accepted socket's
    check_mechanism(mgr, "tcp_connect")
    check_mechanism(mgr, "tcp_close")


async def test_a_connect_that_fails_is_a_close_that_never_connected() -> None:
    """Refused (a port nobody listens on), closed while connecting (a full
    accept queue drops the SYN), reset after it connected, and closed: only
    the first two say `connected: false`, both stamped with the connector."""
    host = "127.0.0.1"
    reserved = socket.socket()  # bound, not listening: connects are refused
    reserved.bind((host, 0))
    refused = reserved.getsockname()[1]
    full = socket.socket()
    full.bind((host, 0))
    full.listen(0)
    full_port = full.getsockname()[1]
    server = socket.socket()
    server.bind((host, 0))
    server.listen()
    port = server.getsockname()[1]

    def act() -> list[int]:
        c = socket.socket()
        assert c.connect_ex((host, refused)) == errno.ECONNREFUSED
        c.close()
        queued = socket.create_connection((host, full_port))  # (the accept queue is full now)
        pending = socket.socket()
        pending.setblocking(False)
        assert pending.connect_ex((host, full_port)) == errno.EINPROGRESS
        time.sleep(0.05)
        pending.close()  # still SYN_SENT
        reset = socket.create_connection((host, port))
        conn, _ = server.accept()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()  # a reset
        time.sleep(0.05)
        ports = [reset.getsockname()[1]]
        reset.close()
        with socket.create_connection((host, port)) as ok:
            ports.append(ok.getsockname()[1])
            server.accept()[0].close()
        queued.close()
        return ports

    try:
        events, (reset_port, ok_port), mgr = await capture(
            [EventType.TCP_CONNECT, EventType.TCP_CLOSE], act,
            lambda seen: len(mine(seen, type=EventType.TCP_CLOSE, pid=os.getpid(), dport=port)) >= 2,
        )
    finally:
        for s in (reserved, full, server):
            s.close()
    me = mine(events, pid=os.getpid())
    for dport in (refused, port):
        assert len(mine(me, type=EventType.TCP_CONNECT, dport=dport)) == (1 if dport == refused else 2)
    assert [e.connected for e in mine(me, type=EventType.TCP_CLOSE, dport=refused)] == [False]
    pending_closes = [e for e in mine(me, type=EventType.TCP_CLOSE, dport=full_port) if not e.connected]
    assert len(pending_closes) == 1
    assert sorted((e.sport, e.connected) for e in mine(me, type=EventType.TCP_CLOSE, dport=port)) == sorted(
        [(reset_port, True), (ok_port, True)])
    assert all(e.to_dict()["connected"] is e.connected for e in me if e.type == EventType.TCP_CLOSE)
    check_mechanism(mgr, "tcp_close")


def sendmmsg(fd: int, datagrams: list[bytes], to: tuple[str, int] | None) -> None:
    """sendmmsg(2) through libc (Python has no binding): one message per
    datagram, each to `to` (IPv4) or to the connected peer."""
    import ctypes

    class IoVec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

    class MsgHdr(ctypes.Structure):
        _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.POINTER(IoVec)),
                    ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                    ("flags", ctypes.c_int)]

    class MMsgHdr(ctypes.Structure):
        _fields_ = [("hdr", MsgHdr), ("msg_len", ctypes.c_uint)]

    bufs = [ctypes.create_string_buffer(d, len(d)) for d in datagrams]
    iovs = [IoVec(ctypes.cast(b, ctypes.c_void_p), len(d)) for b, d in zip(bufs, datagrams)]
    addr = None
    if to is not None:
        addr = ctypes.create_string_buffer(struct.pack("<HH4s8x", socket.AF_INET, socket.htons(to[1]),
                                                       socket.inet_aton(to[0])), 16)
    msgs = (MMsgHdr * len(datagrams))()
    for m, iov in zip(msgs, iovs):
        m.hdr.iov, m.hdr.iovlen = ctypes.pointer(iov), 1
        if addr is not None:
            m.hdr.name, m.hdr.namelen = ctypes.cast(addr, ctypes.c_void_p), 16
    libc = ctypes.CDLL(None, use_errno=True)
    assert ctypes.sizeof(MMsgHdr) == 64 and libc.sendmmsg(fd, msgs, len(datagrams), 0) == len(datagrams)
    assert [m.msg_len for m in msgs] == [len(d) for d in datagrams]


@pytest.mark.parametrize("family,host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
async def test_udp_send(family: int, host: str, token: str) -> None:
    receiver = socket.socket(family, socket.SOCK_DGRAM)
    receiver.bind((host, 0))
    port = receiver.getsockname()[1]
    payload = token.encode() * 3

    def act() -> None:
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.sendto(payload, (host, port))  # sendto(2)
        s.connect((host, port))
        s.sendmsg([payload, b"!"])  # sendmsg(2) on a connected socket
        s.sendmsg([b"abc"] * 10)  # more iovecs than a chunk
        s.sendmsg([b"z"] * 1024)  # UIO_MAXIOV
        os.write(s.fileno(), b"12345")  # write(2) on a connected socket
        os.writev(s.fileno(), [b"ab", b"cde"])
        sendmmsg(s.fileno(), [b"q" * 7, b"r" * 11], (host, port) if family == socket.AF_INET else None)
        sendmmsg(s.fileno(), [b"m" * n for n in range(1, 13)], None)  # (7 one by one, then the rest)
        s.send(b"." * 99)  # (the end)
        s.close()

    try:
        events, _, mgr = await capture(
            [EventType.UDP_SEND], act, lambda seen: any(e.bytes == 99 for e in mine(seen, dport=port))
        )
    finally:
        receiver.close()
    sent = mine(events, dport=port, pid=os.getpid())
    fam = "ipv4" if family == socket.AF_INET else "ipv6"
    # (udp_sendmsg sees each message of a sendmmsg; its tracepoint, the first
    # seven, then one send with the rest)
    many = [(fam, host, n) for n in range(1, 13)]
    if check_mechanism(mgr, "udp_sendmsg")["mechanism"] == "tracepoint":
        many = [*many[:7], (fam, host, sum(range(8, 13)))]
    assert [(e.family, e.daddr, e.bytes) for e in sent] == [
        (fam, host, len(payload)), (fam, host, len(payload) + 1), (fam, host, 30), (fam, host, 1024),
        (fam, host, 5), (fam, host, 5), (fam, host, 7), (fam, host, 11), *many, (fam, host, 99)]
    assert sent[0].to_dict().keys() >= {"family", "daddr", "dport", "bytes"} and "saddr" not in sent[0].to_dict()
    check_mechanism(mgr, "udp_sendmsg")


# -- security ----------------------------------------------------------------------------


async def test_exec_check_reports_the_filename(token: str) -> None:
    async with CaptureManager(FAST) as mgr, await mgr.subscribe([EventType.EXEC_CHECK]) as sub:
        proc = await anyio.open_process(["/bin/echo", token])
        await proc.wait()
        events = await collect_until(sub, lambda seen: any(e.pid == proc.pid for e in seen))
        check_mechanism(mgr, "bprm_check_security")
    e = next(e for e in events if e.pid == proc.pid)
    assert e.filename == "/bin/echo" and e.type == EventType.EXEC_CHECK
    assert set(e.to_dict()) >= {"filename", "pid", "comm"}


def test_doctor_agrees_with_the_probes(bpfcap_cmd: list[str]) -> None:
    r = subprocess.run([*bpfcap_cmd, "doctor", "--json"], capture_output=True, check=True)
    info = orjson.loads(r.stdout)
    chosen = {p["name"]: p["mechanism"] for p in info["probes"]}
    assert set(chosen) == set(PLANS) and all(chosen.values())
    for name, mech in chosen.items():
        want = expected_mechanism(name)
        assert want is None or mech == want, (name, mech)
    if (out := os.environ.get("BPFCAP_RESULTS_DIR")) and not os.environ.get("BPFCAP_DISABLE_MECHANISMS"):
        Path(out, "doctor.json").write_bytes(r.stdout)
