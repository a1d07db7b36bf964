"""Event types. The numeric ids are part of the public contract (`eventTypes` in filters)."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Iterable, Mapping, Union

from . import _native
from .errors import UnknownProbeError

__all__ = ["EventType", "parse_types"]


class _EventTypes(enum.IntEnum):
    """The behaviour of `EventType`, whose members come from the core's table
    of event types (`bpfcap-common/src/event_types.rs`); type checkers read
    them from the generated `_EventType` of `_native.pyi`."""

    @property
    def json_name(self) -> str:
        return self.name.lower()

    def __str__(self) -> str:
        return self.json_name

    @classmethod
    def from_name(cls, name: str) -> EventType:
        try:
            return cls[name.strip().upper()]  # type: ignore[return-value]
        except KeyError:
            allowed = ", ".join(t.json_name for t in cls)
            raise UnknownProbeError(f"unknown event type {name!r}; allowed: {allowed}") from None


if TYPE_CHECKING:
    from ._native import _EventType as EventType
else:
    EventType = _EventTypes(
        "EventType", [(name.upper(), tid) for tid, name in _native.event_types()], module=__name__,
        qualname="EventType",
    )
    EventType.__doc__ = "Event types by name; the ids are part of the public contract (`eventTypes` in filters)."


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
