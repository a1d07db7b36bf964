"""bpfcap: capture kernel events (processes, files, network, security checks) through eBPF.

    import anyio
    from bpfcap import CaptureManager, EventType

    async def main():
        async with CaptureManager() as mgr, await mgr.subscribe([EventType.PROCESS_EXEC]) as sub:
            async for event in sub:
                print(event.pid, event.argv)

    anyio.run(main)
"""

from ._native import Event, redact_argv
from .config import PerformanceConfig
from .errors import (
    AttachError,
    BpfcapError,
    ClosedError,
    ConfigError,
    KernelFeatureError,
    PrivilegeError,
    UnknownProbeError,
)
from .events import EventType
from .filters import EventFilter
from .manager import AnySubscription, Batch, CaptureManager, LineSubscription, Subscription
from .programs import BPFProgSpec, SupportedProbes
from .ringbuffer import Lines, RingBufferManager, RingBufferStats
from .session import CommandNotFound, Session, Summary

__all__ = [
    "AnySubscription",
    "AttachError",
    "BPFProgSpec",
    "Batch",
    "BpfcapError",
    "CaptureManager",
    "ClosedError",
    "CommandNotFound",
    "ConfigError",
    "Event",
    "EventFilter",
    "EventType",
    "KernelFeatureError",
    "LineSubscription",
    "Lines",
    "PerformanceConfig",
    "PrivilegeError",
    "RingBufferManager",
    "RingBufferStats",
    "Session",
    "Subscription",
    "Summary",
    "SupportedProbes",
    "UnknownProbeError",
    "redact_argv",
]
__version__ = "0.1.0"
