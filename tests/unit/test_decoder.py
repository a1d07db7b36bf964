"""The native decoder on records recorded from the real ring (tests/data/record.py)."""

import json
import pathlib
import struct

import orjson
import pytest

from bpfcap import EventType, _native

DATA = json.loads(pathlib.Path(__file__).parent.parent.joinpath("data/process_records.json").read_text())
RECORDS = [bytes.fromhex(r["hex"]) for r in DATA["records"]]
HEADER_SIZE = 80


def decode(records):
    events, stats = _native.decode_records(records)
    return events, stats


def test_recorded_workload_decodes_to_what_it_did() -> None:
    events, stats = decode(RECORDS)
    assert stats["received"] == len(RECORDS) and stats["short"] == stats["bad_size"] == stats["unknown_kind"] == 0
    execs = [e for e in events if e.type == EventType.PROCESS_EXEC]
    argvs = [e.argv for e in execs]
    assert ["/bin/sh", "-c", "/bin/echo fixture-token >/dev/null; exit 7"] in argvs
    assert ["/bin/echo", "fixture-token"] in argvs
    echo = next(e for e in execs if e.argv == ["/bin/echo", "fixture-token"])
    sh = next(e for e in execs if e.argv[:2] == ["/bin/sh", "-c"] and "exit 7" in e.argv[2])
    assert echo.filename == "/bin/echo" and echo.comm == "echo" and echo.ppid == sh.pid
    assert echo.argv_truncated is False
    fork = next(e for e in events if e.type == EventType.PROCESS_FORK and e.pid == sh.pid)
    assert fork.child_pid == echo.pid
    exit7 = next(e for e in events if e.type == EventType.PROCESS_EXIT and e.pid == sh.pid)
    assert (exit7.exit_code, exit7.signal, exit7.core_dumped) == (7, None, False)


def test_long_argv_is_cut_and_says_so() -> None:
    events, _ = decode(RECORDS)
    long = next(e for e in events if e.type == EventType.PROCESS_EXEC and e.argv[:2] == ["/bin/echo", "long-argv"])
    assert long.argv_truncated is True
    assert sum(len(a) + 1 for a in long.argv) <= 2048
    assert all(a == "x" * 100 for a in long.argv[2:-1])


def test_killed_process_reports_signal() -> None:
    events, _ = decode(RECORDS)
    killed = [e for e in events if e.type == EventType.PROCESS_EXIT and e.signal is not None]
    assert [(e.signal, e.exit_code) for e in killed] == [(9, None)]


def test_json_has_the_documented_keys() -> None:
    events, _ = decode(RECORDS)
    common = {"type", "ts_ns", "time", "pid", "tid", "ppid", "uid", "gid", "comm", "cgroup_id",
              "container_id", "pod_uid", "mnt_ns", "pid_ns", "net_ns", "session"}
    extra = {
        "process_exec": {"filename", "argv", "argv_truncated", "interpreter"},
        "process_exit": {"exit_code", "signal", "core_dumped"},
        "process_fork": {"child_pid"},
    }
    for e in events:
        d = orjson.loads(e.to_json())
        assert set(d) == common | extra[d["type"]], d["type"]
        assert d["time"].endswith("Z") and len(d["time"]) == 30


def test_short_unknown_and_oversized_records_are_counted_not_trusted() -> None:
    good = RECORDS[0]
    short = good[:10]
    truncated = good[: HEADER_SIZE + 4]  # header says the record is longer than it is
    unknown = struct.pack("<HHI", 999, 0, HEADER_SIZE) + good[8:HEADER_SIZE]
    tiny_size = struct.pack("<HHI", 1, 0, 8) + good[8:]
    events, stats = decode([short, truncated, unknown, tiny_size, good, b""])
    assert len(events) == 1
    assert (stats["short"], stats["bad_size"], stats["unknown_kind"]) == (2, 2, 1)


@pytest.mark.parametrize("cut", range(0, 200, 7))
def test_every_prefix_of_a_record_is_safe(cut: int) -> None:
    for rec in RECORDS:
        events, stats = decode([rec[:cut]])
        assert len(events) + stats["short"] + stats["bad_size"] + stats["unknown_kind"] == 1


def test_loss_events_serialize() -> None:
    e = _native.loss_event(5, "subscriber_queue_full", None)
    assert e.type == EventType.LOSS and e.count == 5
    assert set(orjson.loads(e.to_json())) == {"type", "ts_ns", "time", "count", "reason", "lost_type"}
