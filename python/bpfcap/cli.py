"""The `bpfcap` command: run, exec, doctor."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any, BinaryIO, Callable, Optional, Sequence

import anyio
import anyio.abc
import orjson

from . import _native
from .config import PerformanceConfig
from .errors import BpfcapError, ConfigError, UnknownProbeError
from .events import EventType, parse_types
from .filters import EventFilter
from .manager import AnySubscription, Batch, CaptureManager
from .outputs import Output, OutputError, open_output
from .programs import BPFProgSpec
from .ringbuffer import Lines, RingBufferStats
from .session import CommandNotFound

PROCESS_TYPES = frozenset({EventType.PROCESS_EXEC, EventType.PROCESS_EXIT, EventType.PROCESS_FORK})
EXIT_USAGE = 2
EXIT_FAILURE = 1


class UsageError(Exception):
    """Bad command-line input: reported in one line, exit code 2."""


# -- output ---------------------------------------------------------------------------


def output_for(args: argparse.Namespace, flag: str, path: Optional[str], default: BinaryIO) -> Output:
    """PATH opened under the rules of `outputs` (bpfcap runs as root), with --append/--force."""
    return open_output(path, default, what=flag, append=args.append, force=args.force)


def make_writer(out: Output, fmt: str) -> Callable[[Batch | Lines], Lines]:
    """Writes a batch as JSON lines or text lines, encoded natively in one bytes
    object (a ``Lines`` batch already is); returns what it wrote."""

    def write(batch: Batch | Lines) -> Lines:
        lines = batch if isinstance(batch, Lines) else Lines.encode(batch, fmt)
        out.write(lines.data)
        return lines
    return write


class Counter:
    """Counts what a command delivered, for the live status line and the summary."""

    def __init__(self) -> None:
        self.by_type: dict[str, int] = {}
        self.total = 0
        self.lost = 0

    def add(self, batch: Lines) -> None:
        for name, n in batch.counts.items():
            self.by_type[name] = self.by_type.get(name, 0) + n
            self.total += n
        self.lost += batch.lost

    def summary(self) -> str:
        parts = ", ".join(f"{k}: {v}" for k, v in sorted(self.by_type.items()))
        return f"bpfcap: {self.total} events ({parts or 'none'}); {self.lost} lost"


async def status_line(counter: Counter, mgr: CaptureManager) -> None:
    """Live events/s, losses and attached probes on a terminal's stderr; never on a pipe."""
    last, last_t = 0, anyio.current_time()
    while True:
        await anyio.sleep(1)
        now = anyio.current_time()
        rate = (counter.total - last) / max(now - last_t, 1e-9)
        last, last_t = counter.total, now
        probes = ", ".join(f"{p['name']}:{p['mechanism']}" for p in mgr.probes())
        sys.stderr.write(f"\r\x1b[K{counter.total:,} events, {rate:,.0f}/s, {counter.lost:,} lost | {probes}")
        sys.stderr.flush()


async def stop_on_signals(mgr: CaptureManager, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """SIGINT/SIGTERM end the capture cleanly: what was captured is still written."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for _ in signals:
            mgr.request_stop()
            return


async def stop_after(mgr: CaptureManager, seconds: float) -> None:
    await anyio.sleep(seconds)
    mgr.request_stop()


# -- commands ---------------------------------------------------------------------------


def perf_config(args: argparse.Namespace) -> PerformanceConfig:
    return PerformanceConfig(
        ring_buffer_size=args.ring_buffer_size,
        batch_size=args.batch_size,
        poll_interval=args.poll_interval,
        sampling_rate=args.sampling_rate,
        max_events_per_sec=args.max_events_per_sec,
    )


def split_list(values: Optional[list[str]]) -> list[str]:
    """Values of a repeatable flag that also takes comma-separated lists."""
    return [v.strip() for raw in values or [] for v in raw.split(",") if v.strip()]


def int_list(flag: str, values: Optional[list[str]]) -> list[int]:
    out = []
    for v in split_list(values):
        try:
            out.append(int(v))
        except ValueError:
            raise UsageError(f"{flag} takes integers, not {v!r}") from None
    return out


def build_filter(args: argparse.Namespace) -> EventFilter:
    """The filter of --filter FILE.json, with the filter flags added to it."""
    base: dict[str, Any] = {}
    if args.filter:
        try:
            with open(args.filter, "rb") as f:
                base = EventFilter.from_json(f.read()).to_dict()
        except OSError as e:
            raise UsageError(f"cannot read --filter {args.filter!r}: {e.strerror}") from None
    def extend(key: str, values: list[Any]) -> None:
        if values:
            base[key] = [*base.get(key, []), *values]
    extend("pids", int_list("--pid", getattr(args, "pid", None)))
    extend("uids", int_list("--uid", args.uid))
    extend("comm", split_list(args.comm))
    extend("excludeComm", split_list(args.exclude_comm))
    extend("cgroupPaths", split_list(args.cgroup))
    extend("containerIds", split_list(args.container))
    if getattr(args, "no_follow", False):
        base["followChildren"] = False
    return EventFilter.from_dict(base)


async def cmd_run(args: argparse.Namespace) -> int:
    types = parse_types(args.types) or PROCESS_TYPES
    cfg = perf_config(args)
    event_filter = build_filter(args)
    out = output_for(args, "--output", args.output, sys.stdout.buffer)
    write = make_writer(out, args.format)
    counter = Counter()
    try:
        # The only reader: when the output falls behind, the pump waits and the
        # kernel ring absorbs (then counts what it cannot hold), rather than
        # decoding events only to drop them. Lines are written natively, unless
        # --max-events must cut a batch at an event.
        lines = args.format if args.max_events is None else None
        async with CaptureManager(cfg, redact_secrets=args.redact) as mgr, \
                await mgr.subscribe(types, policy="block", lines=lines) as sub:
            if event_filter != EventFilter():
                await mgr.set_filter(event_filter)
            async with anyio.create_task_group() as tg:
                await tg.start(stop_on_signals, mgr)
                names = ", ".join(sorted(t.json_name for t in types))
                print(f"bpfcap: capturing {names} (Ctrl-C to stop)", file=sys.stderr, flush=True)
                if sys.stderr.isatty() and out.fd != sys.stderr.fileno():
                    tg.start_soon(status_line, counter, mgr)
                if args.duration is not None:
                    tg.start_soon(stop_after, mgr, args.duration)
                await stream(sub, write, counter, args.max_events)
                tg.cancel_scope.cancel()
            stats = mgr.stats()
    finally:
        out.close()
    if sys.stderr.isatty():
        sys.stderr.write("\r\x1b[K")
    print(counter.summary(), file=sys.stderr)
    print(format_stats(stats), file=sys.stderr)
    return 0


def format_stats(st: RingBufferStats) -> str:
    """The pipeline's counters in one line, for the end of a run."""
    dropped = sum(st.dropped_at_subscribers.values())
    return (
        f"bpfcap: read {st.received:,} records ({st.bytes:,} bytes, {st.batches:,} batches); "
        f"filtered out {st.filtered:,}, sampled out {st.sampled_out:,}, rate limited {st.rate_limited:,}; "
        f"lost: {st.lost_in_kernel:,} in the kernel (ring full), {dropped:,} at the subscriber; "
        f"{st.decode_errors:,} decode errors"
    )


async def stream(sub: AnySubscription, write: Callable[[Batch | Lines], Lines], counter: Counter,
                 max_events: Optional[int]) -> None:
    async for batch in sub.batches():
        if max_events is not None and counter.total + len(batch) >= max_events:
            assert not isinstance(batch, Lines)  # (with --max-events, run asks for events)
            counter.add(write(batch[: max_events - counter.total]))
            return
        counter.add(write(batch))


async def ignore_sigint(*, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """While `exec` runs a command, Ctrl-C is the command's to handle (the
    terminal sends it to the command too); bpfcap carries on until it ends."""
    with anyio.open_signal_receiver(signal.SIGINT) as signals:
        task_status.started()
        async for _ in signals:
            pass


async def cmd_exec(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise UsageError("exec needs a command: bpfcap exec [options] -- CMD [ARGS...]")
    if args.pid or args.no_follow:
        raise UsageError("--pid and --no-follow do not apply to exec: it follows its command's process tree")
    if args.grace < 0:
        raise UsageError(f"--grace must be 0 or more seconds, not {args.grace}")
    types = parse_types(args.types) or None
    user_filter = build_filter(args)
    # Both are opened before the capture starts, so that a refused path loses nothing.
    out = output_for(args, "--output", args.output, sys.stderr.buffer)
    try:
        summary_out = output_for(args, "--summary", args.summary, sys.stderr.buffer) if args.summary else None
    except OutputError:
        out.close()
        raise
    write = make_writer(out, args.format)
    try:
        async with CaptureManager(perf_config(args), redact_secrets=args.redact) as mgr:
            if user_filter != EventFilter():
                await mgr.set_filter(user_filter)
            try:
                async with anyio.create_task_group() as tg:
                    await tg.start(ignore_sigint)
                    async with mgr.session(command, label=args.label, types=types, grace=args.grace) as session:
                        async for batch in session.batches():
                            write(batch)
                    tg.cancel_scope.cancel()
            except BaseException as raised:  # noqa: BLE001 - only a missing command is handled here
                if not isinstance(unwrap(raised), CommandNotFound):
                    raise
                print(f"bpfcap: {unwrap(raised)}", file=sys.stderr)
                return 127
            stats = mgr.stats()
        summary = session.summary
        assert session.returncode is not None
        print(summary.render_text(), file=sys.stderr)
        print(format_stats(stats), file=sys.stderr)
        if summary_out is not None:
            summary_out.write(orjson.dumps(summary.to_dict(), option=orjson.OPT_INDENT_2) + b"\n")
    finally:
        out.close()
        if summary_out is not None:
            summary_out.close()
    return session.returncode


async def cmd_doctor(args: argparse.Namespace) -> int:
    """What this machine offers; exit 0 when capture is possible at all."""
    info: dict[str, Any] = dict(_native.system_info())
    info["program_types"] = {}
    info["probes"] = []
    info["ring_buffer"] = None
    if info["missing_privileges"] is None:
        try:
            async with CaptureManager(PerformanceConfig(ring_buffer_size=1 << 16)) as mgr:
                info["ring_buffer"] = "ok"
                info["program_types"] = {t: ("ok" if err is None else err) for t, err in await mgr.program_types()}
                try:  # all at once first: their programs load in parallel
                    await mgr.attach([t for t in EventType if t < EventType.PROBE])
                except BpfcapError:
                    pass  # each probe's own attempt below says what failed
                for spec in _native.supported_probes():
                    entry: dict[str, Any] = {"name": spec["name"], "type": spec["type"],
                                             "plans": [m for m, _ in spec["plans"]]}
                    try:
                        await mgr.load_program(BPFProgSpec(spec["name"]))
                        st = next(p for p in mgr.probes() if p["name"] == spec["name"])
                        entry.update(mechanism=st["mechanism"], targets=st["targets"], skipped=st["skipped"],
                                     left_out=st["left_out"], error=None)
                    except BpfcapError as e:
                        entry.update(mechanism=None, targets=[], skipped=[], left_out=[], error=str(e))
                    info["probes"].append(entry)
        except BpfcapError as e:
            info["ring_buffer"] = f"unavailable: {e}"
    usable = info["ring_buffer"] == "ok" and any(p["mechanism"] for p in info["probes"])
    info["capture_possible"] = usable
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(info, option=orjson.OPT_INDENT_2) + b"\n")
        return 0 if usable else EXIT_FAILURE
    version = info["kernel_version"]
    old = version is not None and tuple(version) < (5, 10, 0)
    print(f"kernel           {info['kernel']}" + ("  (older than 5.10: unsupported)" if old else ""))
    print(f"BTF              {'yes' if info['btf'] else 'no: struct fields that need offsets are reported as 0'}")
    lockdown = info["lockdown"]
    note = " (kernel memory reads refused: most fields will be 0)" if lockdown == "confidentiality" else ""
    print(f"lockdown         {lockdown or 'unknown (no lockdown LSM, or securityfs not mounted)'}{note}")
    print(f"LSMs             {info['lsms'] or 'unknown'}")
    priv = info["missing_privileges"]
    print(f"privileges       {'ok' if priv is None else 'missing ' + priv + ': run as root'}")
    missing = info["missing_kernel_fields"]
    print(f"kernel fields    {'all found' if not missing else 'missing: ' + ', '.join(missing)}")
    print(f"ring buffer      {info['ring_buffer'] or 'not checked (no privileges)'}")
    lsm_off = info["lsms"] is not None and "bpf" not in info["lsms"].split(",")
    for t, status in info["program_types"].items():
        hint = " (the BPF LSM is not active: boot with lsm=...,bpf)" if t == "lsm" and status != "ok" and lsm_off else ""
        print(f"program type     {t:<15} {'works' if status == 'ok' else 'refused: ' + status}{hint}")
    for p in info["probes"]:
        if p["mechanism"]:
            fallback = f" (fallback; skipped {', '.join(s.split(':')[0] for s in p['skipped'])})" if p["skipped"] else ""
            print(f"probe {p['name']:<22} {p['mechanism']}{fallback}")
        else:
            print(f"probe {p['name']:<22} UNAVAILABLE: {p['error']}")
    print("capture          " + ("possible" if usable else "NOT possible"))
    return 0 if usable else EXIT_FAILURE


# -- argument parsing -----------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="bpfcap", description="Capture process, file, network and security events through eBPF.")
    sub = p.add_subparsers(dest="command_name", required=True, parser_class=Parser)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--types", help="comma-separated event types (default: process events); "
                        f"known: {', '.join(t.json_name for t in EventType if t is not EventType.LOSS)}")
        sp.add_argument("--output", "-o", help="write events to FILE (a new file is created mode 0600; "
                        "an existing one must be yours and is truncated; never through a symbolic link)")
        sp.add_argument("--append", action="store_true", help="add to an existing --output/--summary file instead of truncating it")
        sp.add_argument("--force", action="store_true",
                        help="also write an existing file that belongs to another user or has other hard links")
        sp.add_argument("--format", choices=["json", "text"], default="json")
        sp.add_argument("--redact", action="store_true",
                        help="replace command-line values that look like secrets (passwords, tokens, keys) by [REDACTED]")
        sp.add_argument("--ring-buffer-size", type=int, default=PerformanceConfig.ring_buffer_size)
        sp.add_argument("--batch-size", type=int, default=PerformanceConfig.batch_size)
        sp.add_argument("--poll-interval", type=float, default=PerformanceConfig.poll_interval,
                        help="seconds between reads at the latest")
        f = sp.add_argument_group("filters (in the kernel; AND across flags, OR within one; repeat or use commas)")
        f.add_argument("--pid", action="append", help="process ids (and, unless --no-follow, every process they fork)")
        f.add_argument("--uid", action="append", help="user ids")
        f.add_argument("--comm", action="append", help="command names to keep (at most 15 bytes)")
        f.add_argument("--exclude-comm", action="append", help="command names to drop")
        f.add_argument("--cgroup", action="append", help="cgroup v2 paths; each matches its whole subtree")
        f.add_argument("--container", action="append", help="container ids (12-64 hex digits), also ones started later")
        f.add_argument("--no-follow", action="store_true", help="--pid matches those processes only, not their children")
        f.add_argument("--filter", metavar="FILE.json", help="an EventFilter as JSON (the flags add to it)")
        f.add_argument("--sampling-rate", type=float, default=1.0, help="fraction of events kept, in (0, 1]")
        f.add_argument("--max-events-per-sec", type=int, default=0, help="rate limit in the kernel (0: none)")

    run = sub.add_parser("run", help="stream events until stopped")
    common(run)
    run.add_argument("--duration", type=float, help="stop after S seconds")
    run.add_argument("--max-events", type=int, help="stop after N events")

    ex = sub.add_parser("exec", help="run a command and capture it and its descendants")
    common(ex)
    ex.add_argument("--summary", help="write a JSON summary to FILE (created mode 0600)")
    ex.add_argument("--label", help="session label of the command's events (default: the command's name)")
    ex.add_argument("--grace", type=float, default=2.0,
                    help="seconds to wait for descendants still running after the command exits (default 2)")
    ex.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")

    doc = sub.add_parser("doctor", help="check the kernel, privileges and which mechanism each probe uses")
    doc.add_argument("--json", action="store_true")
    return p


COMMANDS = {"run": cmd_run, "exec": cmd_exec, "doctor": cmd_doctor}


def unwrap(exc: BaseException) -> BaseException:
    """The single exception inside (nested) exception groups, if that is what they hold."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if getattr(args, "max_events", None) is not None and args.max_events < 1:
            raise UsageError(f"--max-events must be at least 1, not {args.max_events}")
        if getattr(args, "duration", None) is not None and args.duration <= 0:
            raise UsageError(f"--duration must be positive, not {args.duration}")
        if getattr(args, "types", None):
            parse_types(args.types)
        return anyio.run(COMMANDS[args.command_name], args)
    except BaseException as raised:  # noqa: BLE001 - mapped to exit codes below, the rest re-raised
        exc = unwrap(raised)
        if isinstance(exc, (UsageError, ConfigError, UnknownProbeError, OutputError)):
            print(f"bpfcap: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if isinstance(exc, BpfcapError):
            print(f"bpfcap: error: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        if isinstance(exc, KeyboardInterrupt):
            return 130
        if isinstance(exc, BrokenPipeError):
            # The reader went away (`bpfcap run | head`): stop quietly.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return 0
        raise


if __name__ == "__main__":
    sys.exit(main())
