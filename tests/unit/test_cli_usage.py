"""Usage errors: one line naming the problem, exit code 2, no traceback (no root needed)."""

from __future__ import annotations

import subprocess

import pytest


def bpfcap(cmd: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--types", "process_exec,nope"], "unknown event type 'nope'; allowed: process_exec"),
        (["exec"], "exec needs a command"),
        (["exec", "--"], "exec needs a command"),
        (["run", "--max-events", "0"], "--max-events must be at least 1"),
        (["run", "--duration", "-1"], "--duration must be positive"),
        (["run", "--ring-buffer-size", "1000"], "invalid ringBufferSize = 1000"),
        (["run", "--poll-interval", "0"], "invalid pollInterval = 0.0"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_usage_errors(bpfcap_cmd: list[str], args: list[str], message: str) -> None:
    r = bpfcap(bpfcap_cmd, *args)
    assert r.returncode == 2, r.stderr
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bpfcap: error: ") and message in lines[0], r.stderr


def test_an_unsafe_output_path_is_refused_before_anything_starts(bpfcap_cmd: list[str], tmp_path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    (tmp_path / "link").symlink_to(victim)
    for cmd in (["run", "--output", str(tmp_path / "link")],
                ["exec", "--summary", str(tmp_path / "link"), "--", "true"],
                ["exec", "--output", str(tmp_path / "none" / "e.jsonl"), "--", "true"]):
        r = bpfcap(bpfcap_cmd, *cmd)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("bpfcap: error: refusing to write --"), r.stderr
        assert "capturing" not in r.stderr
    assert victim.read_bytes() == b"precious\n"
