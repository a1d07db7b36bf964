"""BPFProgSpec: what `CaptureManager.load_program` attaches."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

import orjson

from . import _native
from .errors import ConfigError

__all__ = ["BPFProgSpec", "SupportedProbes"]

#: The spec's probes: name, event type, and attach plans in order of preference
#: (mechanism and kernel targets). The first plan that works on the kernel wins.
SupportedProbes: list[dict[str, Any]] = _native.supported_probes()

_BUILTIN = {p["name"] for p in SupportedProbes}
_TYPES = ("builtin", "kprobe", "kretprobe", "uprobe", "uretprobe", "tracepoint", "raw_tracepoint", "lsm")
# How a program of a user's own object may be attached.
_OBJECT_TYPES = ("kprobe", "kretprobe", "uprobe", "uretprobe", "tracepoint", "raw_tracepoint", "lsm", "fentry", "fexit")


@dataclasses.dataclass(frozen=True)
class BPFProgSpec:
    """A probe to load.

    - ``BPFProgSpec("tcp_connect")``: a built-in probe (``type="builtin"``) by its spec name.
    - ``BPFProgSpec("opens", "tracepoint", "syscalls:sys_enter_openat")``: any tracepoint,
      its record decoded field by field from its format file (``event.fields``).
    - ``kprobe``/``kretprobe`` on a kernel function, ``uprobe``/``uretprobe`` on
      ``binary:symbol`` or ``binary:0xoffset``, ``raw_tracepoint`` on a raw
      tracepoint, ``lsm`` on an LSM hook: arguments (or the return value) as integers.
    - ``object``/``program``: a program of your own compiled BPF object, attached as
      ``type`` to ``target``; the records of its ring buffers arrive raw (``event.raw``).

    Events of user-defined probes have type ``probe`` and carry the spec's ``name``.
    """

    name: str
    type: str = "builtin"
    target: str = ""
    object: Optional[str] = None
    program: Optional[str] = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"invalid name = {self.name!r}: must be a non-empty string")
        for field in ("type", "target"):
            if not isinstance(getattr(self, field), str):
                raise ConfigError(f"invalid {field} = {getattr(self, field)!r}: must be a string")
        for field in ("object", "program"):
            if getattr(self, field) is not None and not isinstance(getattr(self, field), str):
                raise ConfigError(f"invalid {field} = {getattr(self, field)!r}: must be a string")
        if self.object is not None or self.program is not None:
            if not self.object or not self.program:
                raise ConfigError("invalid object/program: give both an object file and a program name")
            if self.type not in _OBJECT_TYPES:
                raise ConfigError(f"invalid type = {self.type!r} for an object's program; allowed: {', '.join(_OBJECT_TYPES)}")
        elif self.type not in _TYPES:
            raise ConfigError(f"invalid type = {self.type!r}; allowed: {', '.join(_TYPES)}")
        if self.type == "builtin":
            probe = self.target or self.name
            if probe not in _BUILTIN:
                raise ConfigError(f"invalid name = {probe!r}: not a built-in probe; built-in: {', '.join(sorted(_BUILTIN))}")
        elif not self.target:
            raise ConfigError(f"invalid target = '': a {self.type} needs a target")

    @property
    def builtin(self) -> bool:
        return self.type == "builtin" and self.object is None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BPFProgSpec:
        fields = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(d, Mapping):
            raise ConfigError(f"a program spec must be a JSON object, not {type(d).__name__}")
        unknown = sorted(set(d) - fields)
        if unknown:
            raise ConfigError(f"unknown program spec field(s) {unknown}; allowed: {sorted(fields)}")
        if "name" not in d:
            raise ConfigError("a program spec needs a name (a built-in probe's, or your own for a custom one)")
        return cls(**d)

    @classmethod
    def from_json(cls, text: str | bytes) -> BPFProgSpec:
        try:
            return cls.from_dict(orjson.loads(text))
        except orjson.JSONDecodeError as e:
            raise ConfigError(f"program spec is not valid JSON: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
