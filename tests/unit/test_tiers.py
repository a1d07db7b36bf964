"""The README's test tiers are true: unit tests are not marked root, so
`pytest -m "not root"` and `pytest tests/unit` run them without privileges."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def collected(*args: str) -> set[str]:
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode in (0, 5), out.stderr  # (5: nothing selected)
    return {line for line in out.stdout.splitlines() if "::" in line}


def test_not_root_selects_exactly_the_unit_tests() -> None:
    unit = collected("tests/unit")
    assert unit and collected("-m", "not root") == unit
    assert not collected("-m", "root", "tests/unit")
