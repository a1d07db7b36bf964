"""CaptureManager and Subscription: the anyio face of the native capture.

One pump task per manager waits for the ring to become readable (or for the
poll interval to pass), drains a batch natively with the GIL released, and
hands each subscriber the part of the batch it asked for through a bounded
anyio memory-object stream. A subscriber that falls behind loses batches, never
silently: it receives an in-band ``loss`` event with the count.
"""

from __future__ import annotations

import os
from types import TracebackType
from typing import Any, Iterable, Optional

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from . import _native
from .config import PerformanceConfig
from .errors import ClosedError, ConfigError, UnknownProbeError
from .filters import EventFilter
from .programs import BPFProgSpec
from .events import EventType, TypeLike, parse_types

__all__ = ["CaptureManager", "Subscription"]

Event = _native.Event
Batch = list  # list[Event]

# How often kernel-side loss counters are read (seconds).
_LOSS_CHECK_INTERVAL = 0.25


class Subscription:
    """Events of the requested types, in kernel order.

    ``async for event in sub`` yields events; ``async for batch in sub.batches()``
    yields lists of them. Use ``async with`` (or ``aclose()``) to unsubscribe.
    """

    def __init__(self, manager: CaptureManager, types: frozenset[EventType], max_batches: int) -> None:
        self.types = types
        self._manager = manager
        self._type_ids = frozenset(int(t) for t in types)
        send, recv = anyio.create_memory_object_stream[Batch](max_batches)
        self._send: MemoryObjectSendStream[Batch] = send
        self._recv: MemoryObjectReceiveStream[Batch] = recv
        self._current: Iterable[Any] = iter(())
        self._pending_loss = 0
        self.delivered = 0
        self.dropped = 0
        self.dropped_batches = 0

    # -- fed by the manager's pump ------------------------------------------------

    def _offer(self, batch: Batch) -> None:
        """Queue a batch without waiting; count it as dropped if the queue is full."""
        n = len(batch)
        if self._pending_loss:
            batch = [_native.loss_event(self._pending_loss, "subscriber_queue_full"), *batch]
        try:
            self._send.send_nowait(batch)
        except anyio.WouldBlock:
            self._pending_loss += n
            self.dropped += n
            self.dropped_batches += 1
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            self._manager._unsubscribe(self)
        else:
            self._pending_loss = 0
            self.delivered += n

    def _close_stream(self) -> None:
        self._send.close()

    # -- consumer side -------------------------------------------------------------

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Any:
        for event in self._current:
            return event
        try:
            batch = await self.receive_batch()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None
        self._current = iter(batch)
        return next(self._current)

    def batches(self) -> _Batches:
        """Async iterator of event lists (one list per native batch)."""
        return _Batches(self)

    async def receive_batch(self) -> Batch:
        """The next batch; raises ``anyio.EndOfStream`` once the capture stopped and all was read."""
        rest = list(self._current)
        if rest:
            return rest
        try:
            return await self._recv.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            self._recv.close()
            raise anyio.EndOfStream from None

    async def aclose(self) -> None:
        self._manager._unsubscribe(self)
        self._recv.close()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class _Batches:
    """``async for batch in sub.batches()``: a plain iterator, so breaking out of
    the loop needs no async-generator finalisation (which trio warns about)."""

    def __init__(self, sub: Subscription) -> None:
        self._sub = sub

    def __aiter__(self) -> _Batches:
        return self

    async def __anext__(self) -> Batch:
        try:
            return await self._sub.receive_batch()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None


class CaptureManager:
    """Loads bpfcap's BPF programs, attaches probes on demand, and streams events.

    Use ``async with CaptureManager() as mgr`` (or ``await start()`` and
    ``await stop()`` from the same task). Needs root, or CAP_BPF and CAP_PERFMON.
    """

    def __init__(
        self,
        config: Optional[PerformanceConfig] = None,
        *,
        queue_batches: int = 256,
        disable_mechanisms: Iterable[str] = (),
    ) -> None:
        """``disable_mechanisms`` (e.g. ``["kprobe", "lsm"]``, or the environment variable
        ``BPFCAP_DISABLE_MECHANISMS=kprobe,lsm``) makes probes skip those attach
        mechanisms, to force a fallback."""
        self.config = config or PerformanceConfig()
        env = os.environ.get("BPFCAP_DISABLE_MECHANISMS", "")
        self._disabled = sorted({*disable_mechanisms, *(m.strip() for m in env.split(",") if m.strip())})
        self._queue_batches = queue_batches
        self._native: Optional[_native.Capture] = None
        self._tg: Optional[anyio.abc.TaskGroup] = None
        self._subs: list[Subscription] = []
        self._stop_requested = False
        self._wait_scope: Optional[anyio.CancelScope] = None
        self._lost_seen: dict[str, list[int]] = {}
        self._kernel_lost = 0
        self._filter = EventFilter()

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        if self._native is not None:
            return
        cfg = self.config
        self._native = await anyio.to_thread.run_sync(
            _native.Capture, cfg.ring_buffer_size, cfg.wakeup_bytes, self._disabled
        )
        self._lost_seen = {}
        self._stop_requested = False
        if cfg.max_events_per_sec or cfg.sampling_rate != 1.0:
            await self.set_filter(self._filter)  # puts sampling and the rate limit in force
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._pump, self._native, name="bpfcap pump")

    def request_stop(self) -> None:
        """Ends every subscription once what is already captured has been handed
        out (their ``async for`` loops then finish); ``stop()`` completes the shutdown.
        Call it from the event loop's thread, e.g. from a signal-handling task."""
        self._stop_requested = True
        if self._wait_scope is not None:
            self._wait_scope.cancel()

    async def stop(self) -> None:
        """Delivers what is already in the ring, ends all subscriptions, detaches every probe."""
        native, tg = self._native, self._tg
        if native is None:
            return
        self._tg = None
        self.request_stop()
        try:
            if tg is not None:
                # The pump finishes its last drain and returns; so does the task group.
                await tg.__aexit__(None, None, None)
        finally:
            native.close()
            self._native = None
            self._close_subscriptions()

    def _close_subscriptions(self) -> None:
        for sub in self._subs:
            sub._close_stream()
        self._subs.clear()

    async def __aenter__(self) -> CaptureManager:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        return self._native is not None

    # -- subscriptions -------------------------------------------------------------

    async def subscribe(self, types: Iterable[TypeLike] | str | None = None) -> Subscription:
        """Subscribe to events of ``types`` (all process events if None), attaching their probes."""
        native = self._require()
        wanted = parse_types(types) or frozenset(
            {EventType.PROCESS_EXEC, EventType.PROCESS_EXIT, EventType.PROCESS_FORK}
        )
        for t in sorted(wanted):
            if t not in (EventType.LOSS, EventType.PROBE):  # no probe of their own
                await anyio.to_thread.run_sync(native.enable, int(t))
        sub = Subscription(self, wanted, self._queue_batches)
        self._subs.append(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
            sub._close_stream()

    # -- filtering -------------------------------------------------------------------

    async def set_filter(self, event_filter: EventFilter) -> None:
        """Puts ``event_filter`` in force in the kernel, on the live programs,
        atomically (no moment where everything or nothing passes), together with
        the config's ``sampling_rate`` and ``max_events_per_sec``. On error the
        previous filter stays in force."""
        native = self._require()
        sampling, by_type = self.config.kernel_sampling()
        types = [int(t) for t in event_filter.event_types] or None
        await anyio.to_thread.run_sync(
            lambda: native.set_filter(
                pids=list(event_filter.pids),
                uids=list(event_filter.uids),
                comm=list(event_filter.comm),
                exclude_comm=list(event_filter.exclude_comm),
                cgroup_paths=list(event_filter.cgroup_paths),
                container_ids=list(event_filter.container_ids),
                types=types,
                follow_children=event_filter.follow_children,
                sampling_rate=sampling,
                sampling_by_type=by_type,
                max_events_per_sec=self.config.max_events_per_sec,
            )
        )
        self._filter = event_filter

    @property
    def filter(self) -> EventFilter:
        return self._filter

    async def track(self, pid: int, label: str) -> None:
        """Labels the process tree of ``pid`` (it, its descendants now and those
        it forks later, tracked in the kernel): their events carry ``session=label``."""
        if isinstance(pid, bool) or not isinstance(pid, int) or pid < 1:
            raise ConfigError(f"invalid pid = {pid!r}: must be a process id from 1")
        if not isinstance(label, str) or not label:
            raise ConfigError(f"invalid label = {label!r}: must be a non-empty string")
        native = self._require()
        await anyio.to_thread.run_sync(native.track, pid, label)

    # -- programs --------------------------------------------------------------------

    async def load_program(self, spec: BPFProgSpec) -> None:
        """Attaches a built-in probe or a user-defined program (see ``BPFProgSpec``).
        Events of user-defined programs have type ``probe``: subscribe to
        ``EventType.PROBE`` to receive them. A failure leaves everything else attached."""
        native = self._require()
        if spec.builtin:
            await anyio.to_thread.run_sync(native.enable_probe, spec.target or spec.name)
        else:
            await anyio.to_thread.run_sync(
                native.load_probe, spec.name, spec.type, spec.target, spec.object, spec.program
            )

    async def unload_program(self, name: str) -> None:
        """Detaches what ``load_program`` attached under ``name`` (or a built-in probe)."""
        native = self._require()
        if not await anyio.to_thread.run_sync(native.unload_probe, name):
            if not await anyio.to_thread.run_sync(native.disable_probe, name):
                raise UnknownProbeError(f"no program named {name!r} is loaded")

    # -- introspection -------------------------------------------------------------

    def probes(self) -> list[dict[str, Any]]:
        """What is attached and how: built-in probes (name, event type, mechanism,
        kernel targets, programs, why each preferred mechanism was skipped) and
        user-defined programs (mechanism = their type)."""
        native = self._require()
        user = [
            {"name": u["name"], "type": "probe", "mechanism": u["type"], "targets": [u["target"]],
             "programs": [u["program"] or u["type"]], "skipped": [], "object": u["object"]}
            for u in native.user_probes()
        ]
        return [*native.probes(), *user]

    def stats(self) -> dict[str, Any]:
        """Reader and delivery counters."""
        native = self._require()
        st: dict[str, Any] = dict(native.stats())
        st["lost_in_kernel"] = sum(native.lost_in_kernel())
        drops = native.drops()
        for reason, counts in drops.items():
            st[reason] = sum(counts)
        st["by_type"] = {
            t.json_name: {reason: counts[t] for reason, counts in drops.items() if counts[t]}
            for t in EventType
            if any(counts[t] for counts in drops.values())
        }
        st["dropped_at_subscribers"] = sum(s.dropped for s in self._subs)
        return st

    def _require(self) -> _native.Capture:
        if self._native is None:
            raise ClosedError("the capture manager is not running; use `async with CaptureManager()` or start()")
        return self._native

    # -- the pump --------------------------------------------------------------------

    async def _pump(self, native: _native.Capture) -> None:
        fd = native.fileno()
        interval = self.config.poll_interval
        next_loss_check = anyio.current_time() + _LOSS_CHECK_INTERVAL
        try:
            while not self._stop_requested:
                # The fd becomes readable only when a program forces a wake-up
                # (a batch's worth of data is pending); otherwise the poll
                # interval bounds how long records wait. Never per event.
                with anyio.CancelScope() as self._wait_scope, anyio.move_on_after(interval):
                    await anyio.wait_readable(fd)
                self._wait_scope = None
                native.take_wakeups()
                self._drain_all(native)
                now = anyio.current_time()
                if now >= next_loss_check:
                    self._check_kernel_loss(native)
                    next_loss_check = now + _LOSS_CHECK_INTERVAL
                await anyio.lowlevel.checkpoint()
        finally:
            # Whatever ended the pump, hand out what the ring still holds, then
            # end the subscriptions so their readers finish.
            self._drain_all(native)
            self._check_kernel_loss(native)
            self._close_subscriptions()

    def _drain_all(self, native: _native.Capture) -> None:
        size = self.config.batch_size
        while True:
            batch = native.drain(size)
            if batch:
                self._dispatch(batch)
            if len(batch) < size:
                return

    def _dispatch(self, batch: Batch) -> None:
        present = {e.type_id for e in batch}
        for sub in tuple(self._subs):
            ids = sub._type_ids
            if present <= ids:
                sub._offer(batch)
            elif not present.isdisjoint(ids):
                sub._offer([e for e in batch if e.type_id in ids])

    def _check_kernel_loss(self, native: _native.Capture) -> None:
        """Turns increases of the kernel's per-type counters of lost (ring full),
        sampled-out and rate-limited events into in-band loss events."""
        drops = native.drops()
        counters = {
            "kernel_ring_full": native.lost_in_kernel(),
            "sampled": drops["sampled"],
            "rate_limited": drops["rate_limited"],
        }
        for reason, totals in counters.items():
            seen = self._lost_seen.setdefault(reason, [0] * len(totals))
            for type_id, total in enumerate(totals):
                new = total - seen[type_id]
                if new <= 0:
                    continue
                seen[type_id] = total
                if reason == "kernel_ring_full":
                    self._kernel_lost += new
                notice = [_native.loss_event(new, reason, type_id)]
                for sub in tuple(self._subs):
                    if type_id in sub._type_ids:
                        sub._offer(notice)
