"""The command line against the real kernel."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import orjson
import pytest

from .helpers import OFFERED, PLANS


def bpfcap(cmd: list[str], *args: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout, **kw)


def start_run(cmd: list[str], *args: str, **kw) -> tuple[subprocess.Popen[str], str]:
    """`bpfcap run ...`, returned once it says it is capturing (slow machines and
    emulated VMs take seconds to start)."""
    proc = subprocess.Popen([*cmd, "run", *args], stderr=subprocess.PIPE, text=True, **kw)
    assert proc.stderr is not None
    first = proc.stderr.readline()
    assert "capturing" in first, first + proc.stderr.read()
    return proc, first


def test_exec_propagates_exit_code_and_reports_the_shell(bpfcap_cmd: list[str], tmp_path: Path) -> None:
    events_file, summary_file = tmp_path / "events.jsonl", tmp_path / "summary.json"
    r = bpfcap(bpfcap_cmd, "exec", "--output", str(events_file), "--summary", str(summary_file),
               "--", "sh", "-c", "exit 3")
    assert r.returncode == 3, r.stderr
    events = [orjson.loads(line) for line in events_file.read_bytes().splitlines()]
    execs = [e for e in events if e["type"] == "process_exec"]
    assert [e["argv"] for e in execs] == [["sh", "-c", "exit 3"]]
    sh_pid = execs[0]["pid"]
    exits = [e for e in events if e["type"] == "process_exit"]
    assert [(e["pid"], e["exit_code"]) for e in exits] == [(sh_pid, 3)]
    summary = orjson.loads(summary_file.read_bytes())
    assert summary["exit_code"] == 3
    assert [p["argv"] for p in summary["processes"]] == [["sh", "-c", "exit 3"]]
    for f in (events_file, summary_file):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert "exited with 3" in r.stderr


def test_exec_follows_descendants_only(bpfcap_cmd: list[str], token: str, tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    # Something unrelated runs at the same time and must not appear.
    noise = subprocess.Popen(["sh", "-c", f"for i in 1 2 3 4 5; do /bin/echo noise-{token}; sleep 0.05; done"],
                             stdout=subprocess.DEVNULL)
    r = bpfcap(bpfcap_cmd, "exec", "-o", str(out), "--", "sh", "-c",
               f"sh -c '/bin/echo {token}-grandchild' >/dev/null; /bin/echo {token}-child >/dev/null")
    noise.wait()
    assert r.returncode == 0, r.stderr
    events = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    argvs = [e["argv"] for e in events if e["type"] == "process_exec"]
    assert ["/bin/echo", f"{token}-grandchild"] in argvs and ["/bin/echo", f"{token}-child"] in argvs
    assert not any(f"noise-{token}" in " ".join(a) for a in argvs)
    # Every event belongs to the tree rooted at the command.
    pids = {events[0]["pid"]} | {e["child_pid"] for e in events if e["type"] == "process_fork"}
    assert all(e["pid"] in pids for e in events)


def test_exec_of_a_killed_command_exits_128_plus_signal(bpfcap_cmd: list[str]) -> None:
    r = bpfcap(bpfcap_cmd, "exec", "--", "sh", "-c", "kill -TERM $$")
    assert r.returncode == 128 + 15, r.stderr


def test_exec_of_a_missing_program(bpfcap_cmd: list[str]) -> None:
    r = bpfcap(bpfcap_cmd, "exec", "--", "/nonexistent/program")
    assert r.returncode == 127
    assert "command not found" in r.stderr and "Traceback" not in r.stderr


def test_run_streams_json_lines_with_max_events(bpfcap_cmd: list[str], token: str) -> None:
    proc, _ = start_run(bpfcap_cmd, "--types", "process_exec", "--max-events", "50", "--duration", "60",
                        stdout=subprocess.PIPE)
    for _ in range(60):
        subprocess.run(["/bin/echo", token], stdout=subprocess.DEVNULL)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    events = [orjson.loads(line) for line in out.splitlines()]
    assert len(events) == 50
    assert {e["type"] for e in events} == {"process_exec"}
    assert any(e["argv"] == ["/bin/echo", token] for e in events)
    assert "50 events" in err


def test_run_stops_on_sigint_with_a_summary(bpfcap_cmd: list[str], tmp_path: Path) -> None:
    out = tmp_path / "run.jsonl"
    proc, _ = start_run(bpfcap_cmd, "--output", str(out))
    subprocess.run(["/bin/true"])
    proc.send_signal(2)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "events (" in err
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert any(orjson.loads(line)["type"] == "process_exec" for line in out.read_bytes().splitlines())


def test_run_with_text_format(bpfcap_cmd: list[str], token: str) -> None:
    proc, _ = start_run(bpfcap_cmd, "--format", "text", "--types", "process_exec", "--duration", "3",
                        stdout=subprocess.PIPE)
    subprocess.run(["/bin/echo", token], stdout=subprocess.DEVNULL)
    subprocess.run(["/bin/echo", f"{token}-forged\n12:00:00.000000 process_exec 1 0 init \x1b[2J"],
                   stdout=subprocess.DEVNULL)
    out, _ = proc.communicate(timeout=30)
    lines = [line for line in out.splitlines() if token in line]
    assert lines[0].split()[1] == "process_exec" and lines[0].endswith(f"/bin/echo {token}")
    # Another process's argv cannot forge a line or send escape sequences to the terminal.
    assert len(lines) == 2 and lines[1].endswith(f"{token}-forged\\x0a12:00:00.000000 process_exec 1 0 init \\x1b[2J")
    assert not any(line.startswith("12:00:00") for line in out.splitlines())


def test_doctor_reports_the_mechanism_of_each_process_probe(bpfcap_cmd: list[str]) -> None:
    r = bpfcap(bpfcap_cmd, "doctor", "--json")
    assert r.returncode == 0, r.stderr
    info = orjson.loads(r.stdout)
    assert info["btf"] is True and info["missing_privileges"] is None
    mech = {p["name"]: p["mechanism"] for p in info["probes"]}
    for name in ("sched_process_exec", "sched_process_exit", "sched_process_fork"):
        assert mech[name] == "raw_tracepoint"
    assert info["capture_possible"] is True and info["ring_buffer"] == "ok"
    assert info["program_types"]["tracepoint"] == "ok" and info["program_types"]["raw_tracepoint"] == "ok"


def test_doctor_text_names_fallbacks(bpfcap_cmd: list[str]) -> None:
    r = bpfcap(bpfcap_cmd, "doctor")
    assert r.returncode == 0, r.stderr
    lines = {line.split()[1]: line for line in r.stdout.splitlines() if line.startswith("probe ")}
    assert sorted(lines) == sorted(PLANS)  # every built-in probe, the file changes' too
    assert "tracepoint" in lines["file_delete"]
    if "kprobe" not in OFFERED:
        # Host kernel: kprobe/fentry/LSM refused, each fallback named.
        assert "tracepoint (fallback; skipped kprobe, fentry)" in lines["tcp_connect"]
        assert "raw_tracepoint (fallback; skipped lsm, fentry, kprobe)" in lines["bprm_check_security"]
        assert "program type     kprobe          refused" in r.stdout


def test_run_filter_flags_and_filter_file(bpfcap_cmd: list[str], token: str, tmp_path: Path) -> None:
    import shutil

    keep = tmp_path / "bpfcapflag"
    shutil.copy("/bin/echo", keep)
    spec = tmp_path / "filter.json"
    spec.write_text('{"uids": [0], "eventTypes": ["process_exec"]}')
    proc, _ = start_run(bpfcap_cmd, "--filter", str(spec), "--comm", "bpfcapflag", "--types", "process_exec,process_exit",
                        "--duration", "3", stdout=subprocess.PIPE)
    subprocess.run([str(keep), token], stdout=subprocess.DEVNULL)
    subprocess.run(["/bin/echo", token], stdout=subprocess.DEVNULL)
    out, err = proc.communicate(timeout=60)
    events = [orjson.loads(line) for line in out.splitlines()]
    # comm AND uid AND eventTypes: only the exec of the renamed echo passes.
    assert [(e["type"], e["comm"], e["argv"][-1]) for e in events] == [("process_exec", "bpfcapflag", token)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pid", "abc"], "--pid takes integers, not 'abc'"),
        (["--pid", "-5"], "invalid pids entry -5"),
        (["--container", "not-hex"], "invalid containerIds entry 'not-hex'"),
        (["--cgroup", "/no/such/cgroup"], "invalid cgroupPaths = /no/such/cgroup"),
        (["--sampling-rate", "0"], "invalid samplingRate = 0.0"),
        (["--max-events-per-sec", "-1"], "invalid maxEventsPerSec = -1"),
        (["--filter", "/no/such/file.json"], "cannot read --filter"),
    ],
)
def test_bad_filter_flags(bpfcap_cmd: list[str], args: list[str], message: str) -> None:
    r = bpfcap(bpfcap_cmd, "run", "--duration", "1", *args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr


def test_exec_refuses_conflicting_flags(bpfcap_cmd: list[str]) -> None:
    r = bpfcap(bpfcap_cmd, "exec", "--pid", "1", "--", "true")
    assert r.returncode == 2 and "do not apply to exec" in r.stderr


def test_run_redacts_secrets_on_request(bpfcap_cmd: list[str], token: str, tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    proc, _ = start_run(bpfcap_cmd, "--redact", "--types", "process_exec", "--duration", "3", "-o", str(out))
    subprocess.run(["/bin/sh", "-c", f"GITHUB_TOKEN=s3cr3t-{token} /bin/echo {token}"], stdout=subprocess.DEVNULL)
    subprocess.run(["/bin/echo", token, "-H", f"Authorization: Bearer {token}-bearer"], stdout=subprocess.DEVNULL)
    proc.communicate(timeout=30)
    text = out.read_text()
    assert token in text and f"s3cr3t-{token}" not in text and f"{token}-bearer" not in text
    argvs = [e["argv"] for e in map(orjson.loads, text.splitlines()) if token in " ".join(e["argv"])]
    assert ["/bin/sh", "-c", f"GITHUB_TOKEN=[REDACTED] /bin/echo {token}"] in argvs
    assert ["/bin/echo", token, "-H", "Authorization: [REDACTED]"] in argvs


def test_outputs_that_are_devices_or_fifos_keep_their_mode(bpfcap_cmd: list[str], tmp_path: Path) -> None:
    before = Path("/dev/null").stat()
    r = bpfcap(bpfcap_cmd, "run", "--duration", "0.2", "-o", "/dev/null")
    assert r.returncode == 0, r.stderr
    after = Path("/dev/null").stat()
    assert (after.st_mode, after.st_uid) == (before.st_mode, before.st_uid)
    fifo = tmp_path / "summary.fifo"
    os.mkfifo(fifo, 0o644)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    r = bpfcap(bpfcap_cmd, "exec", "--summary", str(fifo), "-o", "/dev/null", "--", "sh", "-c", "exit 4")
    out, _ = reader.communicate(timeout=30)
    assert r.returncode == 4, r.stderr
    assert orjson.loads(out)["exit_code"] == 4
    assert stat.S_IMODE(fifo.stat().st_mode) == 0o644
