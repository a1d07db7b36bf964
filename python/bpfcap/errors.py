"""The exception hierarchy of bpfcap (the native module raises these too)."""

from __future__ import annotations

__all__ = [
    "AttachError",
    "BpfcapError",
    "ClosedError",
    "ConfigError",
    "KernelFeatureError",
    "PrivilegeError",
    "UnknownProbeError",
]


class BpfcapError(Exception):
    """Base class of every error bpfcap raises."""


class PrivilegeError(BpfcapError, PermissionError):
    """The process lacks a capability (CAP_BPF, CAP_PERFMON, ...); the message names it."""


class KernelFeatureError(BpfcapError):
    """The running kernel lacks a feature (BTF, a program type, a hook)."""


class ConfigError(BpfcapError, ValueError):
    """A configuration value is out of range; the message names field, value and range."""


class UnknownProbeError(BpfcapError, ValueError):
    """No such event type or probe."""


class AttachError(BpfcapError):
    """A probe could not be loaded or attached by any mechanism."""


class ClosedError(BpfcapError):
    """The capture was stopped."""
