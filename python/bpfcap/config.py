"""PerformanceConfig: ring size, batching and latency of the capture pipeline."""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping

import orjson

from . import _native
from .errors import BpfcapError, ConfigError
from .events import EventType

__all__ = ["PerformanceConfig"]

# Average bytes per record, to turn batch_size (events) into the kernel's
# wake-up watermark (bytes pending in the ring).
_AVG_RECORD_BYTES = 96
_MAX_RING = 1 << 30
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*(ns|us|µs|ms|s)\s*$")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0}


def _seconds(field: str, value: Any) -> float:
    """A duration: seconds as a number, or a string with a unit ("10ms", "1.5s")."""
    if isinstance(value, bool):
        raise ConfigError(f"invalid {field} = {value!r}: expected seconds or a string like '10ms'")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _UNITS[m.group(2)]
    raise ConfigError(f"invalid {field} = {value!r}: expected seconds or a string like '10ms'")


@dataclasses.dataclass(frozen=True)
class PerformanceConfig:
    """How much the kernel buffers and how often userspace reads.

    JSON names (``from_json``/``to_json``): ``ringBufferSize``, ``batchSize``,
    ``pollInterval``, ``maxEventsPerSec``, ``samplingRate``, ``rings``.
    """

    ring_buffer_size: int = 16 << 20
    """Bytes of the kernel ring buffer: a power of two, at least one page."""
    batch_size: int = 4096
    """Events per batch handed to subscribers; also sets the wake-up watermark."""
    poll_interval: float = 0.02
    """Seconds between reads at the latest: bounds latency when events are few."""
    max_events_per_sec: int = 0
    """Global rate limit in the kernel (a token bucket over all CPUs); 0: none."""
    sampling_rate: float | Mapping[str, float] = 1.0
    """Fraction of events kept, in (0, 1]: one number for every type, or per type name."""
    rings: int = 1
    """Ring buffers: 1 (shared), 2 or 4 (CPU c writes to ring c % rings), each ring_buffer_size bytes."""

    def __post_init__(self) -> None:
        page = _native.PAGE_SIZE
        rbs = self.ring_buffer_size
        if isinstance(rbs, bool) or not isinstance(rbs, int) or rbs < page or rbs > _MAX_RING or rbs & (rbs - 1):
            raise ConfigError(
                f"invalid ringBufferSize = {rbs!r}: must be a power of two from {page} (one page) to {_MAX_RING} bytes"
            )
        bs = self.batch_size
        if isinstance(bs, bool) or not isinstance(bs, int) or not 1 <= bs <= 1_000_000:
            raise ConfigError(f"invalid batchSize = {bs!r}: must be an integer from 1 to 1000000")
        pi = _seconds("pollInterval", self.poll_interval)
        if not 0.0001 <= pi <= 10.0:
            raise ConfigError(f"invalid pollInterval = {self.poll_interval!r}: must be from 0.1ms to 10s")
        object.__setattr__(self, "poll_interval", pi)
        if self.rings not in (1, 2, 4) or isinstance(self.rings, bool):
            raise ConfigError(f"invalid rings = {self.rings!r}: must be 1, 2 or 4")
        mps = self.max_events_per_sec
        if isinstance(mps, bool) or not isinstance(mps, int) or not 0 <= mps <= 100_000_000:
            raise ConfigError(f"invalid maxEventsPerSec = {mps!r}: must be an integer from 0 (no limit) to 100000000")
        rates = self.sampling_rate if isinstance(self.sampling_rate, Mapping) else {"*": self.sampling_rate}
        for name, r in rates.items():
            if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r <= 1:
                where = "" if name == "*" else f"[{name!r}]"
                raise ConfigError(f"invalid samplingRate{where} = {r!r}: must be in (0, 1]")
            if name != "*":
                try:
                    EventType.from_name(name)
                except BpfcapError as e:
                    raise ConfigError(f"invalid samplingRate key: {e}") from None

    def kernel_sampling(self) -> tuple[float, list[tuple[int, float]]]:
        """(rate for every type, [(type id, rate)]) as the kernel filter takes them."""
        if isinstance(self.sampling_rate, Mapping):
            return 1.0, [(int(EventType.from_name(k)), float(v)) for k, v in self.sampling_rate.items()]
        return float(self.sampling_rate), []

    @property
    def wakeup_bytes(self) -> int:
        """Pending bytes at which the kernel wakes the reader (at most a quarter of the ring)."""
        return min(self.batch_size * _AVG_RECORD_BYTES, self.ring_buffer_size // 4)

    _JSON = {
        "ringBufferSize": "ring_buffer_size",
        "batchSize": "batch_size",
        "pollInterval": "poll_interval",
        "maxEventsPerSec": "max_events_per_sec",
        "samplingRate": "sampling_rate",
        "rings": "rings",
    }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PerformanceConfig:
        if not isinstance(d, Mapping):
            raise ConfigError(f"performance config must be a JSON object, not {type(d).__name__}")
        unknown = sorted(set(d) - set(cls._JSON))
        if unknown:
            raise ConfigError(f"unknown performance config field(s) {unknown}; allowed: {sorted(cls._JSON)}")
        return cls(**{cls._JSON[k]: v for k, v in d.items()})

    @classmethod
    def from_json(cls, text: str | bytes) -> PerformanceConfig:
        try:
            d = orjson.loads(text)
        except orjson.JSONDecodeError as e:
            raise ConfigError(f"performance config is not valid JSON: {e}") from None
        return cls.from_dict(d)

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, v) for k, v in self._JSON.items()}
        if isinstance(d["samplingRate"], Mapping):
            d["samplingRate"] = dict(d["samplingRate"])
        return d

    def to_json(self) -> str:
        return orjson.dumps(self.to_dict()).decode()
