"""Agent sessions: `bpfcap exec` and `CaptureManager.session` on real commands,
with summaries checked against what the commands did."""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from bpfcap import CaptureManager, CommandNotFound, EventType, PerformanceConfig, schema

pytestmark = pytest.mark.anyio
FAST = PerformanceConfig(ring_buffer_size=1 << 24, batch_size=1024, poll_interval=0.01)


@pytest.fixture
def peers() -> Any:
    """A TCP listener (accepting in the background) and a bound UDP socket."""
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    yield tcp.getsockname()[1], udp.getsockname()[1]
    tcp.close()
    udp.close()


def script(tmp: Path, token: str, tcp_port: int, udp_port: int) -> tuple[list[str], Path, bytes]:
    """Three levels of processes: sh -> sh -> (head, python3). Writes a file
    named with the token, reads it back, connects to the TCP port, sends one
    UDP datagram; prints a deterministic line; exits 0."""
    data = (token * 7).encode()
    target = tmp / f"{token}.txt"
    peer = tmp / "peer.py"
    peer.write_text(
        "import socket\n"
        f"s = socket.create_connection(('127.0.0.1', {tcp_port}))\ns.close()\n"
        f"u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nu.sendto(b'{token}', ('127.0.0.1', {udp_port}))\n"
    )
    inner = f"head -c 4096 {target} >/dev/null; {sys.executable} -S {peer}"
    cmd = ["sh", "-c", f"printf %s {data.decode()} > {target}; sh -c '{inner}'; echo level1 done"]
    return cmd, target, data


def normalized(summary: dict[str, Any], token: str) -> dict[str, Any]:
    """What must be the same between two runs of the same command."""
    def tree(node: dict[str, Any]) -> Any:
        return (node["argv"], node["exit_code"], node["signal"], [tree(c) for c in node["children"]])
    return {
        "processes": [tree(p) for p in summary["processes"]],
        "files": [f for f in summary["files"] if token in f["path"]],
        "tcp": summary["tcp"],
        "udp": summary["udp"],
        "exit_code": summary["exit_code"],
    }


def check_summary(summary: dict[str, Any], cmd: list[str], target: Path, data: bytes, tcp_port: int, udp_port: int,
                  token: str) -> None:
    assert schema.summary_errors(summary) == []
    (root,) = summary["processes"]
    assert root["argv"] == cmd and root["exit_code"] == 0
    (level2,) = root["children"]
    assert level2["argv"][:2] == ["sh", "-c"] and level2["exit_code"] == 0
    assert [c["argv"][0] for c in level2["children"]] == ["head", sys.executable]
    assert all(c["exit_code"] == 0 and c["children"] == [] for c in level2["children"])
    (f,) = [f for f in summary["files"] if f["path"] == str(target)]
    assert (f["writes"], f["written_bytes"], f["read_bytes"]) == (1, len(data), len(data))
    assert f["opens"] == 2
    assert [(c["daddr"], c["dport"], c["connects"]) for c in summary["tcp"] if c["dport"] == tcp_port] == [("127.0.0.1", tcp_port, 1)]
    assert [(u["daddr"], u["dport"], u["sends"], u["bytes"]) for u in summary["udp"]] == [("127.0.0.1", udp_port, 1, len(token))]
    assert summary["exit_code"] == 0 and summary["lost"] == {}


def test_exec_summary_lists_exactly_what_the_command_did(bpfcap_cmd: list[str], tmp_path: Path, token: str, peers: Any) -> None:
    tcp_port, udp_port = peers
    cmd, target, data = script(tmp_path, token, tcp_port, udp_port)
    summary_file, events_file = tmp_path / "summary.json", tmp_path / "events.jsonl"
    r = subprocess.run([*bpfcap_cmd, "exec", "--summary", str(summary_file), "--output", str(events_file), "--", *cmd],
                       capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    plain = subprocess.run(cmd, capture_output=True, timeout=60)
    assert r.stdout == plain.stdout == b"level1 done\n"  # the command's stdout, untouched
    summary = orjson.loads(summary_file.read_bytes())
    check_summary(summary, cmd, target, data, tcp_port, udp_port, token)
    for f in (summary_file, events_file):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    events = [orjson.loads(line) for line in events_file.read_bytes().splitlines()]
    assert events and all(schema.event_errors(e) == [] for e in events)
    assert {e["session"] for e in events} == {"sh"}
    text = r.stderr.decode()
    assert "exited with 0" in text and str(target) in text and f"127.0.0.1:{udp_port}" in text


def test_a_refused_connect_is_counted_as_failed(bpfcap_cmd: list[str], tmp_path: Path) -> None:
    """curl to a port nobody listens on: strace sees connect() refused; the
    summary counts the connect as failed and no connection as closed."""
    reserved = socket.socket()
    reserved.bind(("127.0.0.1", 0))  # (bound, never listening)
    port = reserved.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    try:
        traced = subprocess.run(["strace", "-f", "-e", "trace=connect,getsockopt", "curl", "-s", url],
                                capture_output=True, text=True)
        # (curl connects without blocking, then reads the outcome with SO_ERROR)
        assert re.search(rf"connect\(.*htons\({port}\).*= -1 (ECONNREFUSED|EINPROGRESS)", traced.stderr)
        assert "ECONNREFUSED" in traced.stderr, traced.stderr
        summary_file = tmp_path / "s.json"
        r = subprocess.run([*bpfcap_cmd, "exec", "--summary", str(summary_file), "-o", os.devnull, "--",
                            "curl", "-s", url], capture_output=True, timeout=60)
    finally:
        reserved.close()
    assert r.returncode == 7, r.stderr.decode()  # curl: could not connect
    summary = orjson.loads(summary_file.read_bytes())
    assert [(c["dport"], c["connects"], c["failed"], c["closes"]) for c in summary["tcp"]] == [(port, 0, 1, 0)]


@pytest.mark.parametrize(("cmd", "code"), [(["sh", "-c", "exit 0"], 0), (["sh", "-c", "exit 3"], 3),
                                           (["sh", "-c", "kill -9 $$"], 137)])
def test_exec_propagates_exit_codes(bpfcap_cmd: list[str], cmd: list[str], code: int) -> None:
    r = subprocess.run([*bpfcap_cmd, "exec", "-o", os.devnull, "--", *cmd], capture_output=True, timeout=60)
    assert r.returncode == code, r.stderr.decode()


def test_exec_waits_for_orphans_within_the_grace_period(bpfcap_cmd: list[str], tmp_path: Path) -> None:
    summary_file = tmp_path / "s.json"
    # The command exits at once; its background child runs for another 0.5 s.
    r = subprocess.run([*bpfcap_cmd, "exec", "--grace", "5", "--summary", str(summary_file), "-o", os.devnull,
                        "--", "sh", "-c", "sleep 0.5 & exit 0"], capture_output=True, timeout=60)
    assert r.returncode == 0
    summary = orjson.loads(summary_file.read_bytes())
    sleeps = [c for c in summary["processes"][0]["children"] if c["argv"] and c["argv"][0] == "sleep"]
    assert [s["exit_code"] for s in sleeps] == [0]  # its exit was captured: bpfcap waited for it


def test_exec_bad_input(bpfcap_cmd: list[str], tmp_path: Path) -> None:
    r = subprocess.run([*bpfcap_cmd, "exec", "--", "/no/such/program"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 127 and r.stderr.strip().splitlines() == ["bpfcap: /no/such/program: command not found"]
    r = subprocess.run([*bpfcap_cmd, "exec", "-o", "/proc/nope/x", "--", "true"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "write --output '/proc/nope/x'" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run([*bpfcap_cmd, "exec", "--grace", "-1", "--", "true"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--grace" in r.stderr


async def test_python_session_gives_the_same_summary_as_the_cli(bpfcap_cmd: list[str], tmp_path: Path, token: str,
                                                                 peers: Any) -> None:
    tcp_port, udp_port = peers
    cmd, target, data = script(tmp_path, token, tcp_port, udp_port)
    seen: list[Any] = []
    async with CaptureManager(FAST) as mgr:
        async with mgr.session(cmd, label="agent-7", stdout=subprocess.DEVNULL) as s:
            async for e in s:
                seen.append(e)
        assert s.returncode == 0 and s.summary is not None
        api = s.summary.to_dict()
    check_summary(api, cmd, target, data, tcp_port, udp_port, token)
    assert {e.session for e in seen if e.type != EventType.LOSS} == {"agent-7"}
    assert api["label"] == "agent-7" and sum(api["events"].values()) == len([e for e in seen if e.type != EventType.LOSS])
    summary_file = tmp_path / "cli.json"
    r = await anyio.run_process([*bpfcap_cmd, "exec", "--summary", str(summary_file), "-o", os.devnull, "--", *cmd], check=False)
    assert r.returncode == 0
    assert normalized(orjson.loads(summary_file.read_bytes()), token) == normalized(api, token)


async def test_session_of_a_missing_command_raises() -> None:
    async with CaptureManager(FAST) as mgr:
        with pytest.raises(CommandNotFound, match="command not found"):
            async with mgr.session(["/no/such/program"]):
                pass
