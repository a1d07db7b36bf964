"""EventFilter: which events the kernel lets through."""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping, Sequence

import orjson

from .errors import ConfigError, UnknownProbeError
from .events import EventType, TypeLike, parse_types

__all__ = ["EventFilter"]

_JSON = {
    "pids": "pids",
    "uids": "uids",
    "cgroupPaths": "cgroup_paths",
    "containerIds": "container_ids",
    "comm": "comm",
    "excludeComm": "exclude_comm",
    "eventTypes": "event_types",
    "followChildren": "follow_children",
}


def _ints(field: str, values: Any, low: int) -> tuple[int, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ConfigError(f"invalid {field} = {values!r}: expected a list of integers")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"invalid {field} entry {v!r}: expected an integer")
        if not low <= v <= 0xFFFFFFFF:
            raise ConfigError(f"invalid {field} entry {v}: must be from {low} to 4294967295")
        out.append(v)
    return tuple(out)


def _strs(field: str, values: Any) -> tuple[str, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ConfigError(f"invalid {field} = {values!r}: expected a list of strings")
    out = []
    for v in values:
        if not isinstance(v, str) or not v:
            raise ConfigError(f"invalid {field} entry {v!r}: expected a non-empty string")
        out.append(v)
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class EventFilter:
    """What passes, decided in the kernel before anything reaches the ring.

    AND across fields, OR within one; an empty field constrains nothing.
    ``pids`` are thread-group ids; with ``follow_children`` (default) every
    process they fork, at any depth, matches too (tracked in the kernel).
    ``cgroup_paths`` are cgroup v2 paths (e.g. ``/system.slice/x.service``)
    matching their whole subtree; ``container_ids`` (12-64 hex digits) match
    the containers' cgroups, including containers that start later.
    ``comm`` keeps only those command names, ``exclude_comm`` drops them (at
    most 15 bytes each: the kernel keeps 15). Capacity: 4096 entries per field.
    """

    pids: Sequence[int] = ()
    uids: Sequence[int] = ()
    cgroup_paths: Sequence[str] = ()
    container_ids: Sequence[str] = ()
    comm: Sequence[str] = ()
    exclude_comm: Sequence[str] = ()
    event_types: Sequence[TypeLike] = ()  # (kept as a sorted tuple of EventType)
    follow_children: bool = True

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "pids", _ints("pids", self.pids, 1))
        set_(self, "uids", _ints("uids", self.uids, 0))
        set_(self, "cgroup_paths", _strs("cgroupPaths", self.cgroup_paths))
        set_(self, "container_ids", _strs("containerIds", self.container_ids))
        set_(self, "comm", _strs("comm", self.comm))
        set_(self, "exclude_comm", _strs("excludeComm", self.exclude_comm))
        for name in (*self.comm, *self.exclude_comm):
            if len(name.encode()) > 15:
                raise ConfigError(f"invalid comm {name!r}: at most 15 bytes (the kernel keeps the first 15 of a name)")
        for c in self.container_ids:
            if not 12 <= len(c) <= 64 or any(ch not in "0123456789abcdef" for ch in c):
                raise ConfigError(f"invalid containerIds entry {c!r}: must be 12 to 64 lowercase hex digits")
        for p in self.cgroup_paths:
            if not p.startswith("/"):
                raise ConfigError(f"invalid cgroupPaths entry {p!r}: must be an absolute cgroup v2 path, e.g. /system.slice")
        try:
            types = parse_types(self.event_types)
        except UnknownProbeError as e:
            raise ConfigError(f"invalid eventTypes: {e}") from None
        set_(self, "event_types", tuple(sorted(types)))
        if not isinstance(self.follow_children, bool):
            raise ConfigError(f"invalid followChildren = {self.follow_children!r}: expected true or false")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EventFilter:
        if not isinstance(d, Mapping):
            raise ConfigError(f"a filter must be a JSON object, not {type(d).__name__}")
        unknown = sorted(set(d) - set(_JSON))
        if unknown:
            raise ConfigError(f"unknown filter field(s) {unknown}; allowed: {sorted(_JSON)}")
        return cls(**{_JSON[k]: v for k, v in d.items()})

    @classmethod
    def from_json(cls, text: str | bytes) -> EventFilter:
        try:
            return cls.from_dict(orjson.loads(text))
        except orjson.JSONDecodeError as e:
            raise ConfigError(f"filter is not valid JSON: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, attr in _JSON.items():
            v = getattr(self, attr)
            if attr == "event_types":
                v = [int(t) for t in v]
            elif isinstance(v, tuple):
                v = list(v)
            if v or attr == "follow_children":
                out[key] = v
        return out

    def to_json(self) -> str:
        return orjson.dumps(self.to_dict()).decode()
