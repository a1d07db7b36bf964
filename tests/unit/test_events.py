import pytest

from bpfcap import EventType, UnknownProbeError, _native
from bpfcap.events import parse_types


def test_python_and_native_agree_on_type_ids() -> None:
    assert {name: tid for tid, name in _native.event_types()} == {t.json_name: int(t) for t in EventType}


def test_ids_are_stable() -> None:
    # Part of the public contract: `eventTypes` in filters uses these numbers.
    assert (EventType.PROCESS_EXEC, EventType.PROCESS_EXIT, EventType.PROCESS_FORK) == (1, 2, 3)
    assert (EventType.TCP_CONNECT, EventType.FILE_OPEN, EventType.FILE_PERMISSION) == (4, 7, 11)
    # Kinds made in userspace sit above every kind a record can have, so the
    # next kernel kind cannot collide with them.
    assert EventType.LOSS == 0x100 and max(t for t in EventType if t is not EventType.LOSS) < 0x100


def test_parse_types_accepts_names_ids_and_members() -> None:
    assert parse_types("process_exec, PROCESS_EXIT") == {EventType.PROCESS_EXEC, EventType.PROCESS_EXIT}
    assert parse_types([3, EventType.PROCESS_EXEC]) == {EventType.PROCESS_FORK, EventType.PROCESS_EXEC}
    assert parse_types(None) == frozenset()


@pytest.mark.parametrize("bad", ["proces_exec", [99], [object()]])
def test_unknown_types_are_named(bad: object) -> None:
    with pytest.raises(UnknownProbeError, match="unknown event type|event type must be"):
        parse_types(bad)  # type: ignore[arg-type]
