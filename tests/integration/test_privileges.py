"""What bpfcap needs, measured by dropping privileges: every feature works
with exactly what the kernel asks for it, and anything less gets one line
naming what is missing."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest

from .helpers import expected_mechanism

NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
# Before 5.11 the kernel counts BPF memory against the locked-memory limit
# (64 KiB by default), which only CAP_SYS_RESOURCE may raise: what it asks for.
CHARGES_MEMLOCK = tuple(map(int, os.uname().release.split(".")[:2])) < (5, 11)
MEMLOCK = ["prlimit", "--memlock=unlimited:unlimited"] if CHARGES_MEMLOCK else []


def as_nobody(*caps: str, memlock: list[str] = MEMLOCK) -> list[str]:
    """Run as user nobody with exactly `caps` (ambient, so they survive exec)."""
    spec = ",".join(["-all", *(f"+{c}" for c in caps)])
    return [*memlock, *NOBODY, f"--inh-caps={spec}", f"--ambient-caps={spec}"]


def as_root_with(*caps: str) -> list[str]:
    """Run as uid 0 whose capabilities are bounded to `caps`."""
    return [*MEMLOCK, "setpriv", f"--bounding-set={','.join(['-all', *(f'+{c}' for c in caps)])}", "--inh-caps=-all"]


def capture(prefix: list[str], bpfcap_cmd: list[str], types: str, token: str,
            trigger: list[str]) -> tuple[subprocess.CompletedProcess[str] | None, list[dict]]:
    """`bpfcap run --types <types>` under `prefix`; runs `trigger` once it captures."""
    proc = subprocess.Popen([*prefix, *bpfcap_cmd, "run", "--types", types, "--duration", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")
    assert proc.stderr is not None
    first = proc.stderr.readline()
    if "capturing" not in first:
        out, err = proc.communicate(timeout=30)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, first + err), []
    subprocess.run(trigger, stdout=subprocess.DEVNULL, check=True)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    return None, [e for e in map(orjson.loads, out.splitlines()) if token in orjson.dumps(e).decode()]


def test_no_capabilities_at_all(bpfcap_cmd: list[str]) -> None:
    r = subprocess.run([*as_nobody(), *bpfcap_cmd, "run", "--duration", "1"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "CAP_BPF" in lines[0] and "CAP_PERFMON" in lines[0], r.stderr


@pytest.mark.parametrize(("caps", "missing"), [(("bpf",), "CAP_PERFMON"), (("perfmon",), "CAP_BPF")])
def test_one_of_the_two_missing(bpfcap_cmd: list[str], caps: tuple[str, ...], missing: str) -> None:
    r = subprocess.run([*as_root_with(*caps), *bpfcap_cmd, "run", "--duration", "1"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and missing in lines[0] and "Traceback" not in r.stderr, r.stderr


def test_cap_bpf_and_cap_perfmon_are_enough_for_every_builtin_probe(bpfcap_cmd: list[str], token: str,
                                                                    tmp_path: Path) -> None:
    victim, program = tmp_path / token, tmp_path / f"{token}-true"
    victim.write_text("x")
    program.write_bytes(Path("/bin/true").read_bytes())
    program.chmod(0o755)
    # uid 0 owns tracefs, so reading it needs no further capability.
    err, events = capture(as_root_with("bpf", "perfmon"), bpfcap_cmd,
                          "process_exec,process_exit,file_open,file_write,tcp_connect,udp_send,exec_check,"
                          "file_permission", token,
                          ["/bin/sh", "-c", f"/bin/echo {token} >/dev/null; /bin/cat {victim} >/dev/null; {program}"])
    assert err is None, err.stderr
    assert {"process_exec", "file_open", "exec_check"} <= {e["type"] for e in events}


def test_an_unprivileged_user_with_cap_bpf_and_cap_perfmon(bpfcap_cmd: list[str], token: str, tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    victim = tmp_path / token
    victim.write_text("x")
    victim.chmod(0o644)
    # Process events come from raw tracepoints: the two capabilities suffice.
    err, events = capture(as_nobody("bpf", "perfmon"), bpfcap_cmd, "process_exec", token, ["/bin/echo", token])
    assert err is None, err.stderr
    assert [e["argv"] for e in events] == [["/bin/echo", token]] and events[0]["uid"] == 0
    err, events = capture(as_nobody("bpf", "perfmon"), bpfcap_cmd, "file_open", token, ["/bin/cat", str(victim)])
    mechanism = expected_mechanism("vfs_open")
    if mechanism == "tracepoint":
        # Syscall tracepoints' layouts are in tracefs (mode 0700): refused, named.
        assert err is not None and err.returncode == 1
        lines = err.stderr.strip().splitlines()
        assert len(lines) == 1 and "tracefs" in lines[0] and "CAP_DAC_READ_SEARCH" in lines[0], err.stderr
    elif mechanism is not None:
        # kprobes and fentry need no tracefs: the two capabilities suffice.
        assert err is None, err.stderr
        assert any(e["type"] == "file_open" and e["path"] == str(victim) for e in events)
    # With read access to tracefs, file events work whatever the mechanism.
    err, events = capture(as_nobody("bpf", "perfmon", "dac_read_search"), bpfcap_cmd, "file_open", token,
                          ["/bin/cat", str(victim)])
    assert err is None, err.stderr
    assert any(e["type"] == "file_open" and e["path"] == str(victim) for e in events)


def test_the_locked_memory_limit_where_the_kernel_counts_it(bpfcap_cmd: list[str], token: str) -> None:
    low = ["prlimit", "--memlock=65536:65536"]
    err, events = capture(as_nobody("bpf", "perfmon", memlock=low), bpfcap_cmd, "process_exec", token,
                          ["/bin/echo", token])
    if CHARGES_MEMLOCK:
        # 64 KiB is too little for the rings, and nobody may not raise it: named.
        assert err is not None and err.returncode == 1
        lines = err.stderr.strip().splitlines()
        assert len(lines) == 1 and "locked-memory limit, 64 KiB" in lines[0] and "CAP_SYS_RESOURCE" in lines[0], lines
        # With CAP_SYS_RESOURCE bpfcap raises the limit itself.
        err, events = capture(as_nobody("bpf", "perfmon", "sys_resource", memlock=low), bpfcap_cmd, "process_exec",
                              token, ["/bin/echo", token])
    # From 5.11 on the memory cgroup is charged instead: the limit does not matter.
    assert err is None, err.stderr
    assert [e["argv"] for e in events] == [["/bin/echo", token]]


def test_uprobes_work_or_name_the_capability_they_need(token: str) -> None:
    script = textwrap.dedent("""
        import anyio, sys
        from bpfcap import BPFProgSpec, CaptureManager, PrivilegeError
        async def main():
            async with CaptureManager() as m:
                try:
                    await m.load_program(BPFProgSpec("u", "uprobe", "libc:getpid"))
                    print("works")
                except PrivilegeError as e:
                    print("refused:", e)
        anyio.run(main)
    """)
    r = subprocess.run([*as_nobody("bpf", "perfmon", "dac_read_search"), sys.executable, "-c", script],
                       capture_output=True, text=True, timeout=60, cwd="/")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "works" or ("refused:" in r.stdout and "CAP_SYS_ADMIN" in r.stdout), r.stdout
