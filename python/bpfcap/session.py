"""Sessions: run a command (an agent, a tool call) and capture it and every
process it spawns, from its first instruction to its last descendant; then
summarise what it did.

    async with CaptureManager() as mgr:
        async with mgr.session(["make", "test"], label="run-42") as s:
            async for event in s:
                ...
        print(s.returncode, s.summary.to_dict())
"""

from __future__ import annotations

import math
import os
import shutil
import signal
from typing import TYPE_CHECKING, Any, AsyncIterator, Iterable, Mapping, Optional, Sequence, TypeVar

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._native import Event
from .errors import BpfcapError, ConfigError
from .events import EventType, TypeLike, parse_types

if TYPE_CHECKING:
    from .manager import CaptureManager, Subscription

__all__ = ["Session", "Summary", "CommandNotFound"]

PROCESS_TYPES = frozenset({EventType.PROCESS_EXEC, EventType.PROCESS_EXIT, EventType.PROCESS_FORK})
# How file events name what is not a file (as /proc/PID/fd does): pipes, sockets, anonymous inodes.
STREAM_PREFIXES = ("pipe:[", "socket:[", "anon_inode:")
_MAY = {1: "exec", 2: "write", 4: "read", 8: "append", 16: "access", 32: "open", 64: "chdir"}


class CommandNotFound(BpfcapError, FileNotFoundError):
    """The session's command does not exist (a shell would exit 127)."""


def exit_status(returncode: int) -> int:
    """A shell's exit status: the code, or 128 + the signal that killed it."""
    return returncode if returncode >= 0 else 128 - returncode


class Summary:
    """What a session's processes did, aggregated from its events, in a
    deterministic order (processes by start, files by path, peers by address)
    so that two summaries can be diffed."""

    def __init__(self, root: int, command: Sequence[str], label: str) -> None:
        self.root = root
        self.command = list(command)
        self.label = label
        self.exit_code: Optional[int] = None
        self.duration_s: Optional[float] = None
        self._procs: dict[int, dict[str, Any]] = {}
        self._files: dict[str, dict[str, int]] = {}
        self._streams: dict[str, dict[str, int]] = {}
        self._tcp: dict[tuple[str, str, int], dict[str, int]] = {}
        self._udp: dict[tuple[str, str, int], dict[str, int]] = {}
        self._exec_checks: dict[str, int] = {}
        self._permissions: dict[tuple[str, int], int] = {}
        self._deleted: dict[tuple[str, bool], int] = {}
        self._renamed: dict[tuple[str, str], int] = {}
        self._mkdirs: dict[str, int] = {}
        self._failed: dict[tuple[str, str, Optional[str], int], int] = {}
        self.events: dict[str, int] = {}
        self.lost: dict[str, int] = {}

    def _proc(self, pid: int, ppid: int, ts: int) -> dict[str, Any]:
        p = self._procs.get(pid)
        if p is None:
            p = {"pid": pid, "ppid": ppid, "argv": None, "filename": None, "exit_code": None, "signal": None,
                 "_start": ts, "_order": len(self._procs)}
            self._procs[pid] = p
        return p

    def add(self, e: Any) -> None:  # (fields per type: the type checks below narrow what Event says is optional)
        t = e.type_id
        if t == EventType.LOSS:
            self.lost[e.reason] = self.lost.get(e.reason, 0) + e.count
            return
        name = e.type_name
        self.events[name] = self.events.get(name, 0) + 1
        if t == EventType.PROCESS_FORK:
            self._proc(e.child_pid, e.pid, e.ts_ns)
        elif t == EventType.PROCESS_EXEC:
            p = self._proc(e.pid, e.ppid, e.ts_ns)
            p["argv"], p["filename"] = e.argv, e.filename
        elif t == EventType.PROCESS_EXIT:
            p = self._proc(e.pid, e.ppid, e.ts_ns)
            p["exit_code"], p["signal"] = e.exit_code, e.signal
        elif t in (EventType.FILE_OPEN, EventType.FILE_READ, EventType.FILE_WRITE):
            # Pipes, sockets and anonymous inodes are not files: they have a part of their own.
            part = self._streams if e.path.startswith(STREAM_PREFIXES) else self._files
            f = part.setdefault(e.path, {"opens": 0, "reads": 0, "read_bytes": 0, "writes": 0, "written_bytes": 0})
            if t == EventType.FILE_OPEN:
                f["opens"] += 1
            elif t == EventType.FILE_READ:
                f["reads"] += 1
                f["read_bytes"] += e.bytes or 0
            else:
                f["writes"] += 1
                f["written_bytes"] += e.bytes or 0
        elif t in (EventType.TCP_CONNECT, EventType.TCP_CLOSE):
            c = self._tcp.setdefault((e.family, e.daddr, e.dport), {"connects": 0, "failed": 0, "closes": 0})
            if t == EventType.TCP_CONNECT:
                c["connects"] += 1
            elif e.connected:
                c["closes"] += 1
            else:  # (its connect failed: no connection, so not counted as one)
                c["failed"] += 1
                c["connects"] = max(0, c["connects"] - 1)
        elif t == EventType.UDP_SEND:
            u = self._udp.setdefault((e.family, e.daddr, e.dport), {"sends": 0, "bytes": 0})
            u["sends"] += 1
            u["bytes"] += e.bytes or 0
        elif t == EventType.EXEC_CHECK:
            _bump(self._exec_checks, e.filename)
        elif t == EventType.FILE_PERMISSION:
            _bump(self._permissions, (e.path, e.mask or 0))
        elif t in _CHANGES:
            if e.error is not None:
                _bump(self._failed, (name, e.path, e.new_path, e.error))
            elif t == EventType.FILE_DELETE:
                _bump(self._deleted, (e.path, e.dir))
            elif t == EventType.FILE_RENAME:
                _bump(self._renamed, (e.path, e.new_path))
            else:
                _bump(self._mkdirs, e.path)

    def _tree(self, pid: int, seen: set[int]) -> dict[str, Any]:
        seen.add(pid)
        p = self._procs[pid]
        kids = sorted((c for c in self._procs.values() if c["ppid"] == pid and c["pid"] not in seen and c["pid"] != pid),
                      key=lambda c: (c["_start"], c["_order"]))
        node = {k: v for k, v in p.items() if not k.startswith("_")}
        node["children"] = [self._tree(c["pid"], seen) for c in kids if c["pid"] not in seen]
        return node

    def to_dict(self) -> dict[str, Any]:
        """The summary as JSON-ready data (documented in the README)."""
        seen: set[int] = set()
        roots = [self._tree(self.root, seen)] if self.root in self._procs else []
        # Processes whose parent is unknown here (reparented orphans seen late).
        for p in sorted(self._procs.values(), key=lambda p: (p["_start"], p["_order"])):
            if p["pid"] not in seen:
                roots.append(self._tree(p["pid"], seen))
        return {
            "command": self.command,
            "label": self.label,
            "exit_code": self.exit_code,
            "duration_s": self.duration_s,
            "processes": roots,
            "files": [{"path": path, **f} for path, f in sorted(self._files.items())],
            "streams": [{"path": path, **{k: n for k, n in f.items() if k != "opens"}}
                        for path, f in sorted(self._streams.items())],
            # (destinations this run connected to: a server's side of a connection is no destination)
            "tcp": [{"family": fam, "daddr": a, "dport": port, **c} for (fam, a, port), c in sorted(self._tcp.items())
                    if c["connects"] or c["failed"]],
            "udp": [{"family": fam, "daddr": a, "dport": port, **c} for (fam, a, port), c in sorted(self._udp.items())],
            "exec_checks": [{"filename": f, "count": n} for f, n in sorted(self._exec_checks.items())],
            "file_permissions": [{"path": p, "mask": m, "access": _access(m), "count": n}
                                 for (p, m), n in sorted(self._permissions.items())],
            "deleted": [{"path": p, "dir": d, "count": n} for (p, d), n in sorted(self._deleted.items())],
            "renamed": [{"path": p, "new_path": q, "count": n} for (p, q), n in sorted(self._renamed.items())],
            "dirs_created": [{"path": p, "count": n} for p, n in sorted(self._mkdirs.items())],
            "failed_changes": [{"type": t, "path": p, "new_path": q, "error": err, "count": n}
                               for (t, p, q, err), n in sorted(self._failed.items(), key=lambda kv: str(kv[0]))],
            "events": dict(sorted(self.events.items())),
            "lost": dict(sorted(self.lost.items())),
        }

    def render_text(self) -> str:
        """The summary for a terminal."""
        d = self.to_dict()
        out = [f"bpfcap: {' '.join(self.command)} exited with {d['exit_code']} after {d['duration_s']} s"]
        out.append("processes:")

        def walk(node: dict[str, Any], depth: int) -> None:
            end = (f"exit {node['exit_code']}" if node["exit_code"] is not None
                   else f"signal {node['signal']}" if node["signal"] else "?")
            argv = " ".join(node["argv"] or []) or "(no exec)"
            out.append(f"  {'  ' * depth}{node['pid']:>7} {end:<10} {argv}")
            for c in node["children"]:
                walk(c, depth + 1)

        for root in d["processes"]:
            walk(root, 0)
        if d["files"]:
            out.append("files (opens, reads/bytes, writes/bytes):")
            out += [f"  {f['path']}  {f['opens']}, {f['reads']}/{f['read_bytes']}, {f['writes']}/{f['written_bytes']}"
                    for f in d["files"]]
        if d["streams"]:
            out.append("pipes and sockets (reads/bytes, writes/bytes):")
            out += [f"  {f['path']}  {f['reads']}/{f['read_bytes']}, {f['writes']}/{f['written_bytes']}"
                    for f in d["streams"]]
        if d["tcp"]:
            out.append("tcp (connects, failed, closes):")
            out += [f"  {c['daddr']}:{c['dport']}  {c['connects']}, {c['failed']}, {c['closes']}" for c in d["tcp"]]
        if d["udp"]:
            out.append("udp (sends, bytes):")
            out += [f"  {u['daddr']}:{u['dport']}  {u['sends']}, {u['bytes']}" for u in d["udp"]]
        for key, title in (("deleted", "deleted"), ("dirs_created", "directories created")):
            if d[key]:
                out.append(f"{title}:")
                out += [f"  {x['path']}{'/' if x.get('dir') else ''}" for x in d[key]]
        if d["renamed"]:
            out.append("renamed:")
            out += [f"  {x['path']} -> {x['new_path']}" for x in d["renamed"]]
        if d["failed_changes"]:
            out.append("failed changes (errno):")
            out += [f"  {x['type']} {x['path']}{' -> ' + x['new_path'] if x['new_path'] else ''} ({x['error']})"
                    for x in d["failed_changes"]]
        if d["exec_checks"] or d["file_permissions"]:
            out.append(f"security: {sum(x['count'] for x in d['exec_checks'])} exec checks, "
                       f"{sum(x['count'] for x in d['file_permissions'])} file permission checks")
        total = sum(d["events"].values())
        lost = ", ".join(f"{k} {v}" for k, v in d["lost"].items()) or "none"
        out.append(f"events: {total} ({', '.join(f'{k} {v}' for k, v in d['events'].items())}); lost: {lost}")
        return "\n".join(out)


_CHANGES = (EventType.FILE_DELETE, EventType.FILE_RENAME, EventType.FILE_MKDIR)
_K = TypeVar("_K")


def _bump(counts: dict[_K, int], key: _K) -> None:
    counts[key] = counts.get(key, 0) + 1


def _access(mask: int) -> str:
    return "|".join(name for bit, name in _MAY.items() if mask & bit) or str(mask)


class Session:
    """A command run under capture: iterate it for its events; when the ``async
    with`` block ends, the command and its descendants have ended (orphans get
    ``grace`` seconds), everything captured was read, and ``summary`` and
    ``returncode`` are set. Use ``CaptureManager.session`` to make one."""

    def __init__(
        self,
        manager: CaptureManager,
        command: Sequence[str],
        *,
        label: Optional[str] = None,
        types: Iterable[TypeLike] | str | None = None,
        grace: float = 2.0,
        max_batches: int = 1024,
        cwd: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        stdin: Any = None,
        stdout: Any = None,
        stderr: Any = None,
    ) -> None:
        if isinstance(command, str) or not command:
            raise ConfigError(f"invalid command = {command!r}: a non-empty list of program and arguments")
        if not math.isfinite(grace) or grace < 0:
            raise ConfigError(f"invalid grace = {grace!r}: seconds from 0")
        self.command = [str(c) for c in command]
        self.label = label or os.path.basename(self.command[0])
        self.types = (parse_types(types) or frozenset(t for t in EventType if t not in (EventType.LOSS, EventType.PROBE))) | PROCESS_TYPES
        self.grace = grace
        self._mgr = manager
        self._popen = {"cwd": cwd, "env": env, "stdin": stdin, "stdout": stdout, "stderr": stderr}
        self._max_batches = max_batches
        self.pid: Optional[int] = None
        self.returncode: Optional[int] = None
        self._summary: Optional[Summary] = None
        self._tg: Optional[anyio.abc.TaskGroup] = None
        self._out: Optional[MemoryObjectSendStream[list[Event]]] = None
        self._in: Optional[MemoryObjectReceiveStream[list[Event]]] = None
        self._current: Iterable[Event] = iter(())
        self._proc: Optional[anyio.abc.Process] = None
        self._sub: Optional[Subscription] = None
        self._done = anyio.Event()

    # -- lifecycle -----------------------------------------------------------------

    async def __aenter__(self) -> Session:
        if shutil.which(self.command[0], path=(self._popen["env"] or os.environ).get("PATH")) is None:
            raise CommandNotFound(f"{self.command[0]}: command not found")
        mgr = self._mgr
        # The command's events pass once its pid is followed; it stops itself
        # before its exec and continues then, so its exec is never missed.
        await mgr.follow(self)
        self._sub = await mgr.subscribe(self.types, max_batches=self._max_batches, name=f"session {self.label}")
        self._proc = await anyio.open_process(
            ["/bin/sh", "-c", 'kill -STOP $$; exec "$@"', "bpfcap-session", *self.command], **self._popen
        )
        self.pid = self._proc.pid
        self._summary = Summary(self.pid, self.command, self.label)
        try:
            await _wait_stopped(self.pid)
            await mgr.follow(self, self.pid)
            await mgr.track(self.pid, self.label)
        except BaseException:
            self._proc.kill()
            raise
        self._started = anyio.current_time()
        self._out, self._in = anyio.create_memory_object_stream[list[Event]](self._max_batches)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._consume)
        self._tg.start_soon(self._forward_sigterm)
        self._proc.send_signal(signal.SIGCONT)
        return self

    async def __aexit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException], tb: Any) -> None:
        proc, tg = self._proc, self._tg
        assert proc is not None and tg is not None
        try:
            if exc_type is not None and proc.returncode is None:
                proc.terminate()  # the block failed: do not leave the command running
            with anyio.CancelScope(shield=exc_type is not None):
                await self._done.wait()
        finally:
            tg.cancel_scope.cancel()
            await tg.__aexit__(None, None, None)
            if self._in is not None:
                self._in.close()
            await self._mgr.unfollow(self)

    async def _consume(self) -> None:
        """Reads the session's events into the summary and the iterator until the
        command and its descendants are gone (or `grace` after the command)."""
        assert self._sub is not None and self._out is not None and self._proc is not None and self._summary is not None
        summary, sub, out, label = self._summary, self._sub, self._out, self.label
        live = {self.pid}
        root_exited = False
        deadline = math.inf

        async def wait_command() -> None:
            nonlocal deadline
            assert self._proc is not None
            rc = await self._proc.wait()
            self.returncode = exit_status(rc)
            summary.exit_code = self.returncode
            summary.duration_s = round(anyio.current_time() - self._started, 3)
            deadline = anyio.current_time() + self.grace

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_command)
            while True:
                with anyio.move_on_after(0.05):
                    # Only this session's events (and loss notices): other
                    # subscribers' probes may have filled the rings before.
                    events = await sub.receive_batch()
                    batch = [e for e in events if e.session == label or e.type_id == EventType.LOSS]
                    for e in batch:
                        summary.add(e)
                        t = e.type_id
                        if t == EventType.PROCESS_FORK:
                            live.add(e.child_pid)
                        elif t == EventType.PROCESS_EXIT:
                            live.discard(e.pid)
                            root_exited |= e.pid == self.pid
                    try:
                        if batch:
                            out.send_nowait(batch)
                    except anyio.WouldBlock:
                        pass  # nobody iterates the session: the summary still has everything
                if self.returncode is not None and root_exited and (not live or anyio.current_time() >= deadline):
                    break
                if self.returncode is not None and anyio.current_time() >= deadline + 2 * self._mgr.config.poll_interval + 1:
                    break  # the command's own exit never arrived (lost): do not wait forever
        await sub.aclose()
        out.close()
        self._done.set()

    async def _forward_sigterm(self) -> None:
        """SIGTERM to this process is passed on to the command."""
        try:
            with anyio.open_signal_receiver(signal.SIGTERM) as signals:
                async for _ in signals:
                    if self._proc is not None and self._proc.returncode is None:
                        self._proc.terminate()
        except (NotImplementedError, ValueError, RuntimeError):
            return  # not the main thread, or no signal support: nothing to forward

    @property
    def summary(self) -> Summary:
        """What the session did so far (complete once it has ended)."""
        if self._summary is None:
            raise BpfcapError("a session has a summary once it has started: use it inside or after its async with block")
        return self._summary

    # -- events ----------------------------------------------------------------------

    def __aiter__(self) -> Session:
        return self

    async def batches(self) -> AsyncIterator[list[Event]]:
        """The session's events, a batch (list) at a time."""
        rest = list(self._current)
        if rest:
            yield rest
        assert self._in is not None, "iterate the session inside its async with block"
        async for batch in self._in:
            yield batch

    async def __anext__(self) -> Event:
        for event in self._current:
            return event
        assert self._in is not None, "iterate the session inside its async with block"
        try:
            batch = await self._in.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None
        self._current = iter(batch)
        return next(self._current)

    async def wait(self) -> int:
        """Waits for the command and its descendants; returns the exit status."""
        await self._done.wait()
        assert self.returncode is not None
        return self.returncode


async def _wait_stopped(pid: int, timeout: float = 10.0) -> None:
    """Waits until process `pid` has stopped itself (state T in /proc)."""
    with anyio.fail_after(timeout):
        while True:
            try:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    state = f.read().rsplit(b")", 1)[1].split()[0]
            except (OSError, IndexError):
                raise BpfcapError(f"the command's process {pid} went away before it could be followed") from None
            if state in (b"T", b"t"):
                return
            await anyio.sleep(0.001)
