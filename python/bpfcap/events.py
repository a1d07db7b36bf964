"""Event types. The numeric ids are part of the public contract (`eventTypes` in filters)."""

from __future__ import annotations

import enum
from typing import Iterable, Mapping, Union

from .errors import UnknownProbeError

__all__ = ["EventType", "parse_types"]


class EventType(enum.IntEnum):
    PROCESS_EXEC = 1
    PROCESS_EXIT = 2
    PROCESS_FORK = 3
    TCP_CONNECT = 4
    TCP_CLOSE = 5
    UDP_SEND = 6
    FILE_OPEN = 7
    FILE_READ = 8
    FILE_WRITE = 9
    EXEC_CHECK = 10
    FILE_PERMISSION = 11
    PROBE = 12
    LOSS = 0x100
    """In-band notice that events were lost (kernel ring full, a slow subscriber)."""

    @property
    def json_name(self) -> str:
        return self.name.lower()

    def __str__(self) -> str:
        return self.json_name

    @classmethod
    def from_name(cls, name: str) -> EventType:
        try:
            return cls[name.strip().upper()]
        except KeyError:
            allowed = ", ".join(t.json_name for t in cls)
            raise UnknownProbeError(f"unknown event type {name!r}; allowed: {allowed}") from None


TypeLike = Union[EventType, str, int]


def parse_types(types: Iterable[TypeLike] | str | None) -> frozenset[EventType]:
    """Event types from names (`"process_exec"`, or a comma-separated string), ids or members."""
    if types is None:
        return frozenset()
    if isinstance(types, str):
        types = [t for t in types.split(",") if t.strip()]
    if not isinstance(types, Iterable) or isinstance(types, (bytes, Mapping)):
        raise UnknownProbeError(f"event types must be a list of names or ids, not {types!r}")
    out = set()
    for t in types:
        if isinstance(t, EventType):
            out.add(t)
        elif isinstance(t, int) and not isinstance(t, bool):
            try:
                out.add(EventType(t))
            except ValueError:
                raise UnknownProbeError(
                    f"unknown event type id {t}; allowed: 1..{max(EventType)}"
                ) from None
        elif isinstance(t, str):
            out.add(EventType.from_name(t))
        else:
            raise UnknownProbeError(f"event type must be a name, id or EventType, not {t!r}")
    return frozenset(out)
