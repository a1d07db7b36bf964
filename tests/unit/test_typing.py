"""The hand-written stubs match the native module, and the package type-checks."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_native_stubs_match_the_module() -> None:
    r = subprocess.run([sys.executable, "-m", "mypy.stubtest", "bpfcap._native"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_package_type_checks() -> None:
    r = subprocess.run([sys.executable, "-m", "mypy", str(ROOT / "python/bpfcap")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
