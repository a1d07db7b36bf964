"""CaptureManager and Subscription: the anyio face of the native capture.

One pump task per manager waits on the rings (see ``RingBufferManager``),
drains whole batches natively with the GIL released, and hands each
subscriber the part of each batch it asked for through a bounded anyio
memory-object stream. A subscriber whose queue is full loses the batch (the
default, ``policy="drop"``: nobody else is slowed) or makes the reader wait
(``policy="block"``: the kernel ring absorbs it, then counts its losses).
Losses are never silent: subscribers receive in-band ``loss`` events.
A subscriber made with ``lines="json"`` (or ``"text"``) receives ``Lines``
batches instead of event lists; when it is the only subscriber, the pump has
them written natively without making a Python object per event.
"""

from __future__ import annotations

import dataclasses
import itertools
from types import TracebackType
from typing import Any, Generic, Hashable, Iterable, Literal, Optional, Sequence, TypeVar, Union, overload

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from . import _native
from .config import PerformanceConfig
from .errors import ClosedError, ConfigError, UnknownProbeError
from .events import EventType, TypeLike, parse_types
from .filters import EventFilter
from .programs import BPFProgSpec
from .ringbuffer import Lines, RingBufferManager, RingBufferStats
from .session import Session

__all__ = ["AnySubscription", "Batch", "CaptureManager", "LineSubscription", "Subscription"]

Event = _native.Event
Batch = list[Event]
"""What ``sub.batches()`` yields: the events of one native batch."""
_B = TypeVar("_B", list[Event], Lines)
_S = TypeVar("_S", bound="_Subscriber[Any]")
Policy = Literal["drop", "block"]
LineFormat = Literal["json", "text"]
_names = itertools.count(1)
# The kernel never makes loss events: a filter on them lets nothing through.
NOTHING = EventFilter(event_types=(EventType.LOSS,))
# At stop, how long blocking subscribers are waited for (seconds) while what
# the rings still hold is handed out; a reader that left costs no more.
FINAL_WAIT = 5.0


class _Subscriber(Generic[_B]):
    """A subscriber's queue of batches (``_B``: event lists or ``Lines``), fed
    by the manager's pump; see ``Subscription`` and ``LineSubscription``."""

    def __init__(
        self,
        manager: CaptureManager,
        types: frozenset[EventType],
        max_batches: int,
        policy: Policy,
        name: str,
        lines: Optional[LineFormat] = None,
    ) -> None:
        self.types = types
        self.policy = policy
        self.name = name
        self.lines = lines
        self._manager = manager
        self._type_ids = frozenset(int(t) for t in types)
        send, recv = anyio.create_memory_object_stream[_B](max_batches)
        self._send: MemoryObjectSendStream[_B] = send
        self._recv: MemoryObjectReceiveStream[_B] = recv
        self._current: Iterable[Event] = iter(())
        self._pending_loss = 0
        self._unsent: Optional[_B] = None
        self._room = anyio.Event()  # set when the reader takes a batch (see _put)
        self.delivered = 0
        self.dropped = 0
        self.dropped_batches = 0

    # -- fed by the manager's pump ------------------------------------------------

    def _offer(self, batch: _B) -> None:
        """Queues a batch without waiting; counts it as dropped if the queue is full."""
        n = len(batch)
        if self._pending_loss:
            batch = _join(self._loss_notice(), batch)
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

    def _flush_loss(self) -> None:
        """Hands out a pending loss notice on its own once there is room, so
        that drops at the end of a burst are told even if no batch follows."""
        if self._pending_loss:
            try:
                self._send.send_nowait(self._loss_notice())
            except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
                return
            self._pending_loss = 0

    def _loss_notice(self) -> _B:
        return self._batch_of([_native.loss_event(self._pending_loss, "subscriber_queue_full")])

    def _batch_of(self, events: list[Event]) -> _B:
        return Lines.encode(events, self.lines) if self.lines else events  # type: ignore[return-value]

    async def _put(self, batch: _B) -> None:
        """Queues a batch, waiting for room (``policy="block"``). It waits for
        the reader, not in the stream's ``send``: a send cancelled by the stop
        may already have handed its batch over, which would then be handed
        out twice; a batch waiting here is only ever handed out by the last drain."""
        while True:
            try:
                await anyio.lowlevel.checkpoint()
                self._send.send_nowait(batch)
            except anyio.WouldBlock:
                self._room = anyio.Event()
                try:
                    await self._room.wait()
                except anyio.get_cancelled_exc_class():
                    self._unsent = batch  # the capture is stopping: its last drain hands it out
                    raise
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._manager._unsubscribe(self)
                return
            except anyio.get_cancelled_exc_class():
                self._unsent = batch
                raise
            else:
                self.delivered += len(batch)
                return

    def _close_stream(self) -> None:
        self._send.close()

    # -- consumer side -------------------------------------------------------------

    def batches(self) -> _Batches[_B]:
        """Async iterator of batches (one per native batch)."""
        return _Batches(self)

    async def receive_batch(self) -> _B:
        """The next batch; raises ``anyio.EndOfStream`` once the capture stopped and all was read."""
        rest = list(self._current)
        if rest:
            return rest  # type: ignore[return-value]  # (only event subscribers iterate events)
        try:
            batch = await self._recv.receive()
            self._room.set()
            return batch
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            self._recv.close()
            raise anyio.EndOfStream from None

    async def aclose(self) -> None:
        self._manager._unsubscribe(self)
        self._recv.close()
        self._room.set()

    async def __aenter__(self: _S) -> _S:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class Subscription(_Subscriber[Batch]):
    """Events of the requested types, in kernel order.

    ``async for event in sub`` yields events; ``async for batch in sub.batches()``
    yields lists of them. Use ``async with`` (or ``aclose()``) to unsubscribe.
    """

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        for event in self._current:
            return event
        try:
            batch = await self.receive_batch()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None
        self._current = iter(batch)
        return next(self._current)


class LineSubscription(_Subscriber[Lines]):
    """A subscriber made with ``lines="json"`` or ``"text"``: ``async for``
    and ``batches()`` both yield ``Lines``, one per native batch."""

    def __aiter__(self) -> LineSubscription:
        return self

    async def __anext__(self) -> Lines:
        return await _Batches(self).__anext__()


AnySubscription = Union[Subscription, LineSubscription]


def _join(a: _B, b: _B) -> _B:
    return a + b  # (a subscriber's batches are all of one kind)


class _Batches(Generic[_B]):
    """``async for batch in sub.batches()``: a plain iterator, so breaking out of
    the loop needs no async-generator finalisation (which trio warns about)."""

    def __init__(self, sub: _Subscriber[_B]) -> None:
        self._sub: _Subscriber[_B] = sub

    def __aiter__(self) -> _Batches[_B]:
        return self

    async def __anext__(self) -> _B:
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
        redact_secrets: bool = False,
    ) -> None:
        """``queue_batches``: each subscriber's queue bound, in batches (at most
        ``batch_size`` events each). ``disable_mechanisms`` (e.g. ``["kprobe",
        "lsm"]``, or the environment variable ``BPFCAP_DISABLE_MECHANISMS``)
        makes probes skip those attach mechanisms, to force a fallback.
        ``redact_secrets``: replace command-line values that look like secrets
        (``--password=…``, ``API_TOKEN=…``, ``Authorization: …``, URL passwords,
        GitHub/AWS/OpenAI/Anthropic/Slack/... token shapes, JWTs) by
        ``[REDACTED]`` before any subscriber sees them (see ``redact_argv``)."""
        self.config = config or PerformanceConfig()
        self._rings = RingBufferManager(self.config, disable_mechanisms=disable_mechanisms,
                                        redact_secrets=redact_secrets)
        self._queue_batches = queue_batches
        self._running = False
        self._tg: Optional[anyio.abc.TaskGroup] = None
        self._subs: list[_Subscriber[Any]] = []
        self._dropped_by_gone: dict[str, int] = {}
        self._stop_requested = False
        self._pump_scope: Optional[anyio.CancelScope] = None
        self._filter = EventFilter()
        self._followed: dict[Hashable, Optional[int]] = {}  # followed trees (see follow)

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        if self._running:
            return
        await self._rings.create()
        self._running = True
        self._stop_requested = False
        cfg = self.config
        if cfg.max_events_per_sec or cfg.sampling_rate != 1.0:
            await self.set_filter(self._filter)  # puts sampling and the rate limit in force
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._pump, name="bpfcap pump")

    def request_stop(self) -> None:
        """Ends every subscription once what is already captured has been handed
        out (their ``async for`` loops then finish); ``stop()`` completes the shutdown.
        Call it from the event loop's thread, e.g. from a signal-handling task."""
        self._stop_requested = True
        if self._pump_scope is not None:
            self._pump_scope.cancel()

    async def stop(self) -> None:
        """Delivers what is already in the ring, ends all subscriptions, detaches every probe."""
        if not self._running:
            return
        tg, self._tg = self._tg, None
        self.request_stop()
        try:
            if tg is not None:
                # The pump finishes its last drain and returns; so does the task group.
                await tg.__aexit__(None, None, None)
        finally:
            self._rings.close()
            self._running = False
            self._close_subscriptions()

    def _close_subscriptions(self) -> None:
        for sub in tuple(self._subs):
            self._unsubscribe(sub)  # keeps its drop count for stats()

    async def __aenter__(self) -> CaptureManager:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        return self._running

    # -- subscriptions -------------------------------------------------------------

    @overload
    async def subscribe(
        self, types: Iterable[TypeLike] | str | None = None, *, policy: Policy = ..., max_batches: Optional[int] = ...,
        name: Optional[str] = ..., lines: None = None,
    ) -> Subscription: ...

    @overload
    async def subscribe(
        self, types: Iterable[TypeLike] | str | None = None, *, policy: Policy = ..., max_batches: Optional[int] = ...,
        name: Optional[str] = ..., lines: LineFormat,
    ) -> LineSubscription: ...

    @overload
    async def subscribe(
        self, types: Iterable[TypeLike] | str | None = None, *, policy: Policy = ..., max_batches: Optional[int] = ...,
        name: Optional[str] = ..., lines: Optional[LineFormat] = ...,
    ) -> AnySubscription: ...

    async def subscribe(
        self,
        types: Iterable[TypeLike] | str | None = None,
        *,
        policy: Policy = "drop",
        max_batches: Optional[int] = None,
        name: Optional[str] = None,
        lines: Optional[LineFormat] = None,
    ) -> AnySubscription:
        """Subscribe to events of ``types`` (all process events if None), attaching their probes.

        ``policy="drop"`` (default): when this subscriber's queue (``max_batches``
        batches) is full, new batches are dropped for it alone and counted;
        ``"block"``: the reader waits for room instead (the kernel ring then
        fills, and what it cannot hold is counted as lost in the kernel).
        ``lines="json"`` or ``"text"``: receive ``Lines`` batches (one line per
        event in one bytes object, as ``bpfcap run`` writes them, with counts
        by type) instead of event lists: the cheapest way to write events out.
        """
        self._require()
        if policy not in ("drop", "block"):
            raise ConfigError(f"invalid policy = {policy!r}: must be 'drop' or 'block'")
        if lines not in (None, "json", "text"):
            raise ConfigError(f"invalid lines = {lines!r}: must be None, 'json' or 'text'")
        size = self._queue_batches if max_batches is None else max_batches
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigError(f"invalid max_batches = {size!r}: must be an integer from 1")
        wanted = parse_types(types) or frozenset(
            {EventType.PROCESS_EXEC, EventType.PROCESS_EXIT, EventType.PROCESS_FORK}
        )
        await self.attach(wanted)
        cls = LineSubscription if lines else Subscription
        sub = cls(self, wanted, size, policy, name or f"subscriber-{next(_names)}", lines)
        self._subs.append(sub)
        return sub

    def _unsubscribe(self, sub: _Subscriber[Any]) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
            sub._close_stream()
            if sub.dropped:
                self._dropped_by_gone[sub.name] = sub.dropped

    # -- filtering -------------------------------------------------------------------

    async def set_filter(self, event_filter: EventFilter) -> None:
        """Puts ``event_filter`` in force in the kernel, on the live programs,
        atomically (no moment where everything or nothing passes), together with
        the config's ``sampling_rate`` and ``max_events_per_sec``. On error the
        previous filter stays in force."""
        await self._apply_filter(self._effective_filter(event_filter))
        self._filter = event_filter

    def _effective_filter(self, base: EventFilter) -> EventFilter:
        """While sessions run, the capture follows their processes (and the
        filter's own pids) with the filter's other fields."""
        if not self._followed:
            return base
        pids = sorted({p for p in self._followed.values() if p} | set(base.pids))
        if not pids:
            return NOTHING
        return dataclasses.replace(base, pids=tuple(pids), follow_children=True)

    async def _apply_filter(self, event_filter: EventFilter) -> None:
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

    # -- sessions --------------------------------------------------------------------

    def session(self, command: Sequence[str], **kwargs: Any) -> Session:
        """Runs ``command`` under capture: ``async with mgr.session(cmd, label=...) as s``,
        iterate ``s`` for its events; afterwards ``s.summary`` and ``s.returncode``.
        See ``Session`` for the options (types, grace, cwd, env, stdin/stdout/stderr).
        While a session runs, the capture follows the sessions' processes only."""
        self._require()
        return Session(self, command, **kwargs)

    async def follow(self, key: Hashable, pid: Optional[int] = None) -> None:
        """Narrows the capture to followed process trees: while any ``key`` is
        followed, only the trees of their pids (and the filter's own ``pids``)
        pass, with the filter's other fields. ``pid=None`` holds a place
        before the process exists: nothing of it passes yet. ``Session`` uses
        this around its command."""
        if pid is not None and (isinstance(pid, bool) or not isinstance(pid, int) or pid < 1):
            raise ConfigError(f"invalid pid = {pid!r}: must be a process id from 1")
        self._followed[key] = pid
        await self._apply_filter(self._effective_filter(self._filter))

    async def unfollow(self, key: Hashable) -> None:
        """Stops following ``key``'s tree (see ``follow``)."""
        self._followed.pop(key, None)
        if self._running:
            await self._apply_filter(self._effective_filter(self._filter))

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

    async def program_types(self) -> list[tuple[str, Optional[str]]]:
        """Each BPF program type bpfcap may use, and why this kernel refuses it (None: it takes it)."""
        return await anyio.to_thread.run_sync(self._require().program_types)

    async def attach(self, types: Iterable[TypeLike] | str) -> None:
        """Attaches the probes that ``types`` need without subscribing (their
        programs load in parallel; ``subscribe`` does this itself)."""
        kinds = [int(t) for t in sorted(parse_types(types)) if t not in (EventType.LOSS, EventType.PROBE)]
        await anyio.to_thread.run_sync(self._require().enable_kinds, kinds)

    def probes(self) -> list[dict[str, Any]]:
        """What is attached and how: built-in probes (name, event type, mechanism,
        kernel targets, programs, why each preferred mechanism was skipped) and
        user-defined programs (mechanism = their type)."""
        native = self._require()
        user = [
            {"name": u["name"], "type": "probe", "mechanism": u["type"], "targets": [u["target"]],
             "programs": [u["program"] or u["type"]], "skipped": [], "left_out": [], "object": u["object"]}
            for u in native.user_probes()
        ]
        return [*native.probes(), *user]

    def stats(self) -> RingBufferStats:
        """Counters from the kernel to the subscribers (see ``RingBufferStats``)."""
        self._require()
        dropped = dict(self._dropped_by_gone)
        dropped.update({s.name: s.dropped for s in self._subs})
        return dataclasses.replace(self._rings.get_stats(), dropped_at_subscribers=dropped)

    def _require(self) -> _native.Capture:
        if not self._running:
            raise ClosedError("the capture manager is not running; use `async with CaptureManager()` or start()")
        return self._rings.native

    # -- the pump --------------------------------------------------------------------

    async def _pump(self) -> None:
        rings = self._rings
        try:
            # request_stop() cancels this scope, wherever the pump waits: for the
            # rings, or for room in a blocking subscriber's queue.
            with anyio.CancelScope() as self._pump_scope:
                while not self._stop_requested:
                    await rings.wait()
                    await self._drain()
                    for sub in tuple(self._subs):
                        sub._flush_loss()
                    await anyio.lowlevel.checkpoint()
        finally:
            # Whatever ended the pump, hand out what the rings still hold, then
            # end the subscriptions so their readers finish.
            with anyio.CancelScope(shield=True):
                # Blocking subscribers still get all of it while they read...
                if any(sub.policy == "block" for sub in self._subs):
                    with anyio.move_on_after(FINAL_WAIT):
                        await self._drain(final=True)
                # ...up to a point: then what is left is offered (and counted if no room).
                await self._drain(waiting=False, final=True)
            self._close_subscriptions()

    async def _drain(self, waiting: bool = True, final: bool = False) -> None:
        """Drains the rings and hands out what they held (after what a stop
        interrupted). The only subscriber, if it wants lines, gets them written
        natively (no Python object per event)."""
        for sub in tuple(self._subs):
            if sub._unsent is not None:
                batch, sub._unsent = sub._unsent, None
                await self._deliver(sub, batch, waiting)
        only = self._subs[0] if len(self._subs) == 1 else None
        if only is not None and only.lines:
            for lines in self._rings.drain_lines(only.lines, only._type_ids, final=final):
                if only in self._subs:
                    await self._deliver(only, lines, waiting)
        else:
            for batch in self._rings.drain(final=final):
                await self._dispatch(batch, waiting)

    async def _deliver(self, sub: _Subscriber[Any], batch: Any, waiting: bool) -> None:
        if sub.policy == "block" and waiting:
            await sub._put(batch)
        else:
            sub._offer(batch)

    async def _dispatch(self, batch: Batch, waiting: bool = True) -> None:
        """Hands each subscriber the events of its types (loss notices of them too)."""
        present = {e.type_id for e in batch}
        loss_only = present == {EventType.LOSS}
        parts = []
        for sub in tuple(self._subs):
            ids = sub._type_ids
            if loss_only:
                part = [e for e in batch if e.lost_type_id in ids]
            elif present <= ids:
                part = batch
            elif present.isdisjoint(ids):
                continue
            else:  # (a loss event goes to the subscribers of the type it is about)
                part = [e for e in batch if e.type_id in ids or (e.type_id == EventType.LOSS and e.lost_type_id in ids)]
            if part:
                parts.append((sub, part))
        for i, (sub, part) in enumerate(parts):
            try:
                await self._deliver(sub, sub._batch_of(part), waiting)
            except anyio.get_cancelled_exc_class():
                # A stop while one subscriber held the pump: the others' parts
                # are handed out by the last drain too.
                for later, rest in parts[i + 1:]:
                    mine = later._batch_of(rest)
                    later._unsent = mine if later._unsent is None else _join(later._unsent, mine)
                raise
