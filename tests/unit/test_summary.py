"""The session summary's parts, from events as the core gives them."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from bpfcap import EventType, schema
from bpfcap.session import Summary


def ev(t: EventType, **fields: Any) -> SimpleNamespace:
    return SimpleNamespace(type_id=int(t), type_name=t.json_name, pid=10, ppid=1, ts_ns=1, **fields)


def test_pipes_and_sockets_are_streams_not_files_and_only_connected_peers_are_destinations() -> None:
    s = Summary(10, ["sh"], "run")
    s.add(ev(EventType.FILE_WRITE, path="pipe:[77]", bytes=5))
    s.add(ev(EventType.FILE_READ, path="pipe:[77]", bytes=5))
    s.add(ev(EventType.FILE_WRITE, path="socket:[78]", bytes=3))
    s.add(ev(EventType.FILE_READ, path="/etc/hosts", bytes=100))
    s.add(ev(EventType.TCP_CONNECT, family="ipv4", daddr="10.0.0.1", dport=443))
    s.add(ev(EventType.TCP_CLOSE, family="ipv4", daddr="10.0.0.1", dport=443, connected=True))
    s.add(ev(EventType.TCP_CONNECT, family="ipv4", daddr="10.0.0.1", dport=443))
    s.add(ev(EventType.TCP_CLOSE, family="ipv4", daddr="10.0.0.1", dport=443, connected=False))  # refused
    s.add(ev(EventType.TCP_CLOSE, family="ipv4", daddr="10.0.0.9", dport=51234, connected=True))  # a server's side
    d = s.to_dict()
    assert [f["path"] for f in d["files"]] == ["/etc/hosts"]
    assert d["streams"] == [
        {"path": "pipe:[77]", "reads": 1, "read_bytes": 5, "writes": 1, "written_bytes": 5},
        {"path": "socket:[78]", "reads": 0, "read_bytes": 0, "writes": 1, "written_bytes": 3},
    ]
    assert d["tcp"] == [{"family": "ipv4", "daddr": "10.0.0.1", "dport": 443, "connects": 1, "failed": 1, "closes": 1}]
    s.exit_code, s.duration_s = 0, 0.1
    assert schema.summary_errors(s.to_dict()) == []
    assert "pipe:[77]  1/5, 1/5" in s.render_text()


def test_file_changes_are_listed_and_failed_ones_apart() -> None:
    s = Summary(10, ["sh"], "run")
    s.add(ev(EventType.FILE_MKDIR, path="/w/d", mode=0o777, error=None))
    s.add(ev(EventType.FILE_RENAME, path="/w/a.lock", new_path="/w/a", flags=0, error=None))
    s.add(ev(EventType.FILE_RENAME, path="/w/a.lock", new_path="/w/a", flags=0, error=None))
    s.add(ev(EventType.FILE_DELETE, path="/w/d", dir=True, error=None))
    s.add(ev(EventType.FILE_DELETE, path="/etc/passwd", new_path=None, dir=False, error=13))
    s.add(ev(EventType.FILE_RENAME, path="/w/x", new_path="/w/y", flags=0, error=2))
    d = s.to_dict()
    assert d["dirs_created"] == [{"path": "/w/d", "count": 1}]
    assert d["renamed"] == [{"path": "/w/a.lock", "new_path": "/w/a", "count": 2}]
    assert d["deleted"] == [{"path": "/w/d", "dir": True, "count": 1}]
    assert d["failed_changes"] == [
        {"type": "file_delete", "path": "/etc/passwd", "new_path": None, "error": 13, "count": 1},
        {"type": "file_rename", "path": "/w/x", "new_path": "/w/y", "error": 2, "count": 1},
    ]
    s.exit_code, s.duration_s = 0, 0.1
    assert schema.summary_errors(s.to_dict()) == []
    text = s.render_text()
    assert "/w/a.lock -> /w/a" in text and "file_delete /etc/passwd (13)" in text
