"""Shared test setup: markers for root-only tests, helpers to trigger our own events."""

from __future__ import annotations

import secrets
import sys

import pytest


def _tracing_privileges() -> str | None:
    """Why real BPF tests cannot run here, or None if they can."""
    from bpfcap import _native

    return _native.system_info()["missing_privileges"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = _tracing_privileges()
    if missing is None:
        return
    skip = pytest.mark.skip(reason=f"needs {missing} (run the tests as root)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def token() -> str:
    """A random token to recognise the events a test caused."""
    return "bpfcap-" + secrets.token_hex(6)


@pytest.fixture(scope="session")
def bpfcap_cmd() -> list[str]:
    """The command line tool, run by the interpreter of the tests."""
    return [sys.executable, "-m", "bpfcap"]
