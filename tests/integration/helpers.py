"""Helpers for tests that trigger their own events and wait for exactly those."""

from __future__ import annotations

import errno
import glob
import os
import re
import subprocess
from typing import Any, Callable

import anyio

from bpfcap import Subscription, _native

# Each built-in probe's attach plans, preferred first.
PLANS = {p["name"]: [m for m, _ in p["plans"]] for p in _native.supported_probes()}


async def collect_until(sub: Subscription, done: Callable[[list[Any]], bool], timeout: float = 5.0) -> list[Any]:
    """Events from `sub` until `done(events)` holds; fails after `timeout` seconds."""
    seen: list[Any] = []
    with anyio.fail_after(timeout):
        async for batch in sub.batches():  # (asked once per batch: a busy machine's events are many)
            seen += batch
            if done(seen):
                return seen
    raise AssertionError(f"subscription ended before the condition held; saw {len(seen)} events")


async def run(argv: list[str]) -> subprocess.CompletedProcess[bytes]:
    """Runs a command to completion without blocking the event loop."""
    return await anyio.run_process(argv, check=False)


def bpf_objects(kind: str) -> list[dict[str, Any]]:
    """`bpftool <kind> list` entries whose name starts with bpfcap/BPFCAP."""
    import json

    out = subprocess.run(["bpftool", "-j", kind, "list"], capture_output=True, check=True).stdout
    return [o for o in json.loads(out or b"[]") if str(o.get("name", "")).lower().startswith("bpfcap")]


def wait_until_no_bpf_objects(timeout: float = 3.0) -> dict[str, list[dict[str, Any]]]:
    """What is left of bpfcap in the kernel once it settles. The kernel frees a
    program in deferred work after its last fd closes, so it may linger briefly."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        left = {kind: bpf_objects(kind) for kind in ("prog", "map", "link")}
        if not any(left.values()) or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def open_fds() -> set[str]:
    return {os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd") if os.path.exists(f"/proc/self/fd/{fd}")}


# The attach mechanisms this kernel offers, per BPFCAP_EXPECT_MECHANISMS (the
# Makefile sets it for the host, the VM runner for each VM); empty when unset.
OFFERED = {m for m in os.environ.get("BPFCAP_EXPECT_MECHANISMS", "").split(",") if m}


def expected_mechanism(probe: str) -> str | None:
    """The first plan of `probe` whose mechanism this kernel offers, per
    BPFCAP_EXPECT_MECHANISMS (the Makefile sets it for the host, the VM runner
    for each VM); None when unset (then only consistency is checked)."""
    if not OFFERED:
        return None
    disabled = set(os.environ.get("BPFCAP_DISABLE_MECHANISMS", "").split(","))
    usable = [m for m in PLANS[probe] if m in OFFERED and m not in disabled]
    return usable[0] if usable else None


def strace_io(argv: list[str], log: str, calls: str = "read,write") -> tuple[subprocess.CompletedProcess[bytes], list[tuple[int, str, str, int]]]:
    """Runs `argv` under `strace -f -y` (an independent tracer) and returns
    what it saw of `calls`: (pid, call, path of the fd, return value) for
    each call that returned, the path as strace names it (`pipe:[INODE]`).
    (One log per process, `-ff`: no call is split by another's.)"""
    proc = subprocess.run(["strace", "-ff", "-y", "-qq", "-e", f"trace={calls}", "-o", log, *argv],
                          capture_output=True, timeout=60)
    seen = []
    for path in sorted(glob.glob(glob.escape(log) + ".*")):
        pid = int(path.rsplit(".", 1)[1])
        with open(path, errors="surrogateescape") as f:
            for line in f:
                m = re.match(r"(\w+)\(\d+<(.*?)>, .*\)\s+=\s+(-?\d+)", line)
                if m:
                    seen.append((pid, m[1], m[2], int(m[3])))
    return proc, seen


CHANGE_CALLS = "unlink,unlinkat,rmdir,rename,renameat,renameat2,mkdir,mkdirat"
_DIRFD = r'(AT_FDCWD(?:<[^>]*>)?|-?\d+<[^>]*>|-?\d+)'
_STR = r'"((?:[^"\\]|\\.)*)"'


def strace_changes(argv: list[str], log: str, cwd: str) -> tuple[subprocess.CompletedProcess[bytes], list[tuple[str, str, str | None, int | None]]]:
    """Runs `argv` in `cwd` under `strace -ff -yy` and returns the file
    changes it saw, as bpfcap reports them: (type, absolute path, new path
    or None, errno or None). Paths are made absolute from the dirfd strace
    names (`3</dir>`, `AT_FDCWD</dir>`), or `cwd` for unlink, rmdir, rename
    and mkdir (from the process's cwd, following its chdir and fchdir; a
    process that changed its cwd must not fork)."""
    proc = subprocess.run(["strace", "-ff", "-yy", "-qq", "-e", f"trace={CHANGE_CALLS},chdir,fchdir", "-o", log, *argv],
                          capture_output=True, timeout=120, cwd=cwd)
    seen: list[tuple[str, str, str | None, int | None]] = []
    for path in sorted(glob.glob(glob.escape(log) + ".*")):
        here = cwd  # (each process's own: `mkdir -p` climbs with fchdir)

        def absolute(dirfd: str | None, name: str) -> str:
            base = here if dirfd in (None, "AT_FDCWD") else re.sub(r"^[^<]*<(.*)>$", r"\1", dirfd)
            return os.path.normpath(os.path.join(base, name))

        with open(path, errors="surrogateescape") as f:
            for line in f:
                m = re.match(r"(\w+)\((.*)\)\s+=\s+(-?\d+)(?: (E\w+))?", line)
                if not m:
                    continue
                call, args, err = m[1], m[2], (getattr(errno, m[4]) if m[4] else None)
                dirfds = re.findall(_DIRFD + r', ' + _STR, args)
                names = re.findall(_STR, args)
                if call in ("chdir", "fchdir"):
                    if err is None:
                        here = absolute(None, names[0]) if call == "chdir" else re.sub(r"^[^<]*<(.*)>$", r"\1", args)
                elif call in ("unlink", "rmdir"):
                    seen.append(("file_delete", absolute(None, names[0]), None, err))
                elif call == "unlinkat":
                    seen.append(("file_delete", absolute(*dirfds[0]), None, err))
                elif call == "rename":
                    seen.append(("file_rename", absolute(None, names[0]), absolute(None, names[1]), err))
                elif call.startswith("renameat"):
                    seen.append(("file_rename", absolute(*dirfds[0]), absolute(*dirfds[1]), err))
                elif call == "mkdir":
                    seen.append(("file_mkdir", absolute(None, names[0]), None, err))
                elif call == "mkdirat":
                    seen.append(("file_mkdir", absolute(*dirfds[0]), None, err))
    return proc, seen
