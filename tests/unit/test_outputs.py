"""The rules for every file bpfcap writes (it runs as root): python/bpfcap/outputs.py.

The cases that need another user's files (chown) run as root only; the rest as anyone.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bpfcap.outputs import OutputError, open_output

NOBODY = 65534


def _may_chown() -> bool:
    with open("/proc/self/status") as f:
        effective = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    return bool(effective & 1)  # CAP_CHOWN (root without it, e.g. in a container, cannot either)


as_root = pytest.mark.skipif(not _may_chown(), reason="making another user's files needs CAP_CHOWN")


def write(path: str, data: bytes = b"event\n", **kw: bool) -> None:
    with open_output(path, sys.stdout.buffer, what="--output", **kw) as out:
        out.write(data)


def refused(path: str, because: str, **kw: bool) -> str:
    with pytest.raises(OutputError) as e:
        write(path, **kw)
    msg = str(e.value)
    assert "\n" not in msg and repr(path) in msg and "--output" in msg and because in msg, msg
    return msg


def snapshot(p: Path) -> tuple[bytes, int, int, int]:
    st = p.stat()
    return p.read_bytes(), st.st_mode, st.st_uid, st.st_nlink


def victim(tmp_path: Path, owner: int | None = None) -> Path:
    v = tmp_path / "victim"
    v.write_bytes(b"precious\n")
    v.chmod(0o644)
    if owner is not None:
        os.chown(v, owner, owner)
    return v


def test_a_new_file_is_created_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write(str(tmp_path / "events.jsonl"))
    finally:
        os.umask(old)
    st = (tmp_path / "events.jsonl").stat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()
    assert (tmp_path / "events.jsonl").read_bytes() == b"event\n"


@as_root
def test_a_symlink_to_another_users_file_is_refused(tmp_path: Path) -> None:
    v = victim(tmp_path, NOBODY)
    before = snapshot(v)
    (tmp_path / "link").symlink_to(v)
    msg = refused(str(tmp_path / "link"), "is a symbolic link")
    assert str(v) in msg
    refused(str(tmp_path / "link"), "is a symbolic link", force=True)  # --force never follows one either
    assert snapshot(v) == before


def test_a_symlink_to_ones_own_file_is_refused_too(tmp_path: Path) -> None:
    v = victim(tmp_path)
    before = snapshot(v)
    (tmp_path / "link").symlink_to(v)
    refused(str(tmp_path / "link"), "is a symbolic link", append=True)
    assert snapshot(v) == before


@as_root
def test_a_symlink_planted_in_a_sticky_world_writable_directory_is_never_followed(tmp_path: Path) -> None:
    shared = tmp_path / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    target_dir = tmp_path / "etc"
    target_dir.mkdir()
    v = target_dir / "passwd"
    v.write_bytes(b"root:x:0:0\n")
    before = snapshot(v)
    # As the final component ...
    (shared / "out.jsonl").symlink_to(v)
    os.lchown(shared / "out.jsonl", NOBODY, NOBODY)
    refused(str(shared / "out.jsonl"), "is a symbolic link")
    # ... and on the way: another user's link to a directory.
    (shared / "dir").symlink_to(target_dir)
    os.lchown(shared / "dir", NOBODY, NOBODY)
    refused(str(shared / "dir" / "passwd"), "a directory others can write")
    assert snapshot(v) == before
    assert not (target_dir / "new.jsonl").exists()
    refused(str(shared / "dir" / "new.jsonl"), "does not follow it")
    assert not (target_dir / "new.jsonl").exists()


def test_symlinks_on_the_way_that_nobody_else_could_plant_are_followed(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real)  # ours, in a directory only we write
    write(str(tmp_path / "alias" / "events.jsonl"))
    assert (real / "events.jsonl").read_bytes() == b"event\n"


@as_root
def test_an_existing_file_of_another_user_is_refused_unless_forced(tmp_path: Path) -> None:
    v = victim(tmp_path, NOBODY)
    before = snapshot(v)
    msg = refused(str(v), "belongs to")
    assert "--force" in msg and "65534" in msg
    assert snapshot(v) == before
    write(str(v), b"forced\n", force=True)
    data, mode, uid, _ = snapshot(v)
    assert data == b"forced\n" and (mode, uid) == (before[1], before[2])  # neither chmod'ed nor chown'ed


def test_an_existing_file_of_ones_own_is_truncated_and_keeps_its_mode(tmp_path: Path) -> None:
    p = tmp_path / "events.jsonl"
    p.write_bytes(b"old events, longer than the new ones\n")
    p.chmod(0o640)
    write(str(p))
    assert p.read_bytes() == b"event\n" and stat.S_IMODE(p.stat().st_mode) == 0o640
    write(str(p), b"more\n", append=True)
    assert p.read_bytes() == b"event\nmore\n"


def test_a_file_readable_by_others_is_written_with_a_warning(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "events.jsonl"
    p.write_bytes(b"")
    p.chmod(0o644)
    write(str(p))
    err = capfd.readouterr().err
    assert "readable by others (mode 0644)" in err and stat.S_IMODE(p.stat().st_mode) == 0o644


def test_a_file_with_other_hard_links_is_refused_unless_forced(tmp_path: Path) -> None:
    v = victim(tmp_path)
    os.link(v, tmp_path / "hardlink")
    before = snapshot(v)
    refused(str(tmp_path / "hardlink"), "2 hard links")
    assert snapshot(v) == before
    write(str(tmp_path / "hardlink"), force=True)
    assert v.read_bytes() == b"event\n"


def test_dev_null_is_written_and_keeps_its_mode() -> None:
    before = os.stat("/dev/null")
    write("/dev/null")
    after = os.stat("/dev/null")
    assert (after.st_mode, after.st_uid) == (before.st_mode, before.st_uid)


def test_a_fifo_is_written_and_keeps_its_mode(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o644)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    write(str(fifo), b"through a fifo\n")
    reader.join(10)
    assert got == [b"through a fifo\n"]
    assert stat.S_IMODE(fifo.stat().st_mode) == 0o644 and stat.S_ISFIFO(fifo.stat().st_mode)


def test_stdout_by_name_is_this_process_own(tmp_path: Path) -> None:
    code = ("import sys; from bpfcap.outputs import open_output\n"
            "for name in ('-', '/dev/stdout', '/dev/fd/1'):\n"
            "    with open_output(name, sys.stdout.buffer) as out: out.write(name.encode() + b'\\n')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60, check=True)
    assert r.stdout == b"-\n/dev/stdout\n/dev/fd/1\n"


def test_a_directory_is_refused(tmp_path: Path) -> None:
    refused(str(tmp_path), "directory")
    refused(str(tmp_path) + "/", "directory")
    (tmp_path / "d").mkdir()
    refused(str(tmp_path / "d"), "is a directory")


def test_a_path_whose_parent_does_not_exist_is_refused_naming_it(tmp_path: Path) -> None:
    msg = refused(str(tmp_path / "no" / "such" / "events.jsonl"), "does not exist")
    assert repr(str(tmp_path / "no")) in msg
    assert not (tmp_path / "no").exists()


def test_a_parent_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    refused(str(tmp_path / "file" / "events.jsonl"), "is not a directory")


def test_a_write_that_fails_mid_run_goes_on_to_stderr_losing_nothing(capfd: pytest.CaptureFixture[bytes]) -> None:
    # /dev/full: every write fails with ENOSPC, like a disk that fills up mid-run.
    with open_output("/dev/full", sys.stdout.buffer, what="--output") as out:
        out.write(b"first batch\n")
        out.write(b"second batch\n")
    err = capfd.readouterr().err
    assert "writing /dev/full failed after 0 bytes (No space left on device)" in err
    assert err.endswith("first batch\nsecond batch\n")
