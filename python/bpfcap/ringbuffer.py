"""RingBufferManager: the capture's ring buffers, read in batches.

The programs submit records without waking anyone until a batch's worth of
data is pending; the reader waits on one fd (readable only at those wake-ups)
or for the poll interval, whichever comes first, then drains and decodes
everything pending natively, one batch per call and GIL acquisition.
`CaptureManager` reads through one of these; use it directly for a
poll/callback loop without subscriptions.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Iterable, Iterator, Optional, TypeVar

import anyio

from . import _native
from .config import PerformanceConfig
from .errors import ClosedError
from .events import EventType

__all__ = ["Lines", "RingBufferManager", "RingBufferStats"]

Event = _native.Event
_B = TypeVar("_B", list[Event], "Lines")


@dataclasses.dataclass(frozen=True)
class RingBufferStats:
    """Counters of a capture's pipeline, from the kernel to the subscribers."""

    received: int
    """Records read from the rings and decoded."""
    bytes: int
    polls: int
    batches: int
    decode_errors: int
    """Records too short, of an unknown kind or with inconsistent sizes (counted, skipped)."""
    enrich_failed: int
    """Events whose cgroup was gone before its container could be read."""
    redacted_args: int
    """Command-line arguments replaced by ``[REDACTED]`` (with ``redact_secrets``)."""
    filter_update_errors: int
    """Containers started after a ``container_ids`` filter whose cgroups the kernel refused to add."""
    lost_in_kernel: int
    """Records the programs could not write: a ring was full."""
    lost_by_cpu: tuple[int, ...]
    lost_by_type: dict[str, int]
    filtered: int
    """Events the kernel filter rejected (not losses: nobody asked for them)."""
    sampled_out: int
    rate_limited: int
    by_type: dict[str, dict[str, int]]
    """Per event type: counts by reason (filtered, sampled, rate_limited, kernel_ring_full)."""
    fill_bytes: int
    """Bytes written to the rings and not read yet."""
    ring_bytes: int
    dropped_at_subscribers: dict[str, int] = dataclasses.field(default_factory=dict)
    """Events each subscriber lost because its queue was full (by subscriber name)."""

    @property
    def fill_ratio(self) -> float:
        return self.fill_bytes / self.ring_bytes if self.ring_bytes else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["lost_by_cpu"] = list(self.lost_by_cpu)
        d["fill_ratio"] = round(self.fill_ratio, 4)
        return d


@dataclasses.dataclass(frozen=True)
class Lines:
    """A batch written out as lines, JSON or text (what ``bpfcap run`` writes),
    made natively without a Python object per event: what a subscriber made
    with ``lines=`` receives."""

    data: bytes
    """One line per event (loss notices included), each ending in a newline."""
    counts: dict[str, int]
    """The batch's events by type name (loss notices not included)."""
    lost: int = 0
    """The events the batch's loss notices announce."""

    @classmethod
    def encode(cls, events: list[Event], fmt: str) -> Lines:
        return cls(*_native.encode_lines(events, fmt))

    def __add__(self, other: Lines) -> Lines:
        counts = dict(self.counts)
        for name, n in other.counts.items():
            counts[name] = counts.get(name, 0) + n
        return Lines(self.data + other.data, counts, self.lost + other.lost)

    def __len__(self) -> int:
        """The events in the batch (as ``len`` of an event list counts them)."""
        return sum(self.counts.values())

    def __bool__(self) -> bool:
        return bool(self.data)


class RingBufferManager:
    """Creates a capture's rings and reads them: ``poll`` returns events,
    ``set_callback`` has each event handed to a function as it is read."""

    def __init__(
        self,
        config: Optional[PerformanceConfig] = None,
        *,
        disable_mechanisms: Iterable[str] = (),
        redact_secrets: bool = False,
    ) -> None:
        self.config = config or PerformanceConfig()
        self.redact_secrets = bool(redact_secrets)
        env = os.environ.get("BPFCAP_DISABLE_MECHANISMS", "")
        self._disabled = sorted({*disable_mechanisms, *(m.strip() for m in env.split(",") if m.strip())})
        self._native: Optional[_native.Capture] = None
        self._callback: Optional[Callable[[Event], None]] = None

    # -- lifecycle -----------------------------------------------------------------

    async def create(self, config: Optional[PerformanceConfig] = None) -> None:
        """Loads bpfcap's BPF object and creates its rings (no probe attached yet)."""
        if config is not None:
            self.config = config
        if self._native is not None:
            raise ClosedError("the ring buffers were already created")
        cfg = self.config
        self._native = await anyio.to_thread.run_sync(
            _native.Capture, cfg.ring_buffer_size, cfg.wakeup_bytes, self._disabled, cfg.rings, self.redact_secrets
        )

    def close(self) -> None:
        """Detaches every probe and frees the rings. Idempotent."""
        if self._native is not None:
            self._native.close()
            self._native = None

    async def __aenter__(self) -> RingBufferManager:
        if self._native is None:
            await self.create()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    @property
    def native(self) -> _native.Capture:
        if self._native is None:
            raise ClosedError("the ring buffers are not created (call create() or use async with)")
        return self._native

    # -- reading ---------------------------------------------------------------------

    def set_callback(self, fn: Optional[Callable[[Event], None]]) -> None:
        """Has ``fn(event)`` called for every event ``poll`` reads (None: no callback)."""
        if fn is not None and not callable(fn):
            raise TypeError(f"the callback must be callable, not {fn!r}")
        self._callback = fn

    async def wait(self, timeout: Optional[float] = None) -> None:
        """Waits for a wake-up (a batch's worth of data is pending) or ``timeout``
        (default: the poll interval), whichever comes first. Holds no GIL: the
        event loop's selector waits."""
        native = self.native
        with anyio.move_on_after(self.config.poll_interval if timeout is None else timeout):
            await anyio.wait_readable(native.fileno())
        native.take_wakeups()

    def drain(self, *, final: bool = False) -> Iterator[list[Event]]:
        """Everything pending, decoded, in batches of at most ``batch_size``,
        each taken from the rings only when the previous one was consumed (what
        is not asked for stays in the rings). The batches carry ``loss`` events
        (ring full, sampled out, rate limited) when the kernel's counters grew,
        checked by the core every quarter second, and at the end when ``final``."""
        def take(size: int) -> tuple[list[Event], int]:
            batch = self.native.drain(size)
            return batch, len(batch)

        yield from self._batches(take)
        if final and (notices := self.native.announce_losses()):
            yield notices

    def drain_lines(self, fmt: str, types: Iterable[int], *, final: bool = False) -> Iterator[Lines]:
        """As ``drain``, for the events of ``types`` only, each batch written as
        lines of ``fmt`` ("json" or "text") natively."""
        kinds = sorted(int(t) for t in types)

        def take(size: int) -> tuple[Lines, int]:
            data, counts, lost, taken = self.native.drain_lines(size, fmt, kinds)
            return Lines(data, counts, lost), taken

        yield from self._batches(take)
        if final and (notices := [e for e in self.native.announce_losses() if e.lost_type_id in kinds]):
            yield Lines.encode(notices, fmt)

    def _batches(self, take: Callable[[int], tuple[_B, int]]) -> Iterator[_B]:
        """`take(batch_size)` -> (batch, records taken) until the rings ran dry."""
        size = self.config.batch_size
        while True:
            batch, taken = take(size)
            if batch:
                yield batch
            if taken < size:
                return

    async def poll(self, timeout: Optional[float] = None) -> list[Event]:
        """Waits as ``wait`` does, then returns every pending event (and loss
        notice), after handing each to the callback if one is set."""
        await self.wait(timeout)
        events = [e for batch in self.drain() for e in batch]
        if self._callback is not None:
            for e in events:
                self._callback(e)
        return events

    # -- stats -------------------------------------------------------------------------

    def get_stats(self) -> RingBufferStats:
        native = self.native
        st = native.stats()
        drops = native.drops()
        lost = native.lost_in_kernel()
        counters = {**drops, "kernel_ring_full": lost}
        # (indexed by the kinds a record can have: `loss` is not one)
        by_type = {
            EventType(k).json_name: {reason: counts[k] for reason, counts in counters.items() if counts[k]}
            for k in range(1, len(lost))
            if any(counts[k] for counts in counters.values())
        }
        fill, size = native.fill()
        return RingBufferStats(
            received=st["received"],
            bytes=st["bytes"],
            polls=st["polls"],
            batches=st["batches"],
            decode_errors=st["decode_errors"],
            enrich_failed=st["enrich_failed"],
            redacted_args=st["redacted_args"],
            filter_update_errors=st["filter_update_errors"],
            lost_in_kernel=sum(lost),
            lost_by_cpu=tuple(native.lost_by_cpu()),
            lost_by_type={EventType(i).json_name: n for i, n in enumerate(lost) if n},
            filtered=sum(drops["filtered"]),
            sampled_out=sum(drops["sampled"]),
            rate_limited=sum(drops["rate_limited"]),
            by_type=by_type,
            fill_bytes=fill,
            ring_bytes=size,
        )

