"""Secret redaction of command lines (the Rust core's patterns, via the binding)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bpfcap import redact_argv

R = "[REDACTED]"


def test_common_secret_forms() -> None:
    assert redact_argv(["psql", "postgres://app:pw@db/prod"]) == ["psql", f"postgres://app:{R}@db/prod"]
    assert redact_argv(["aws", "--secret-access-key", "wJalr/K7MDENG"]) == ["aws", "--secret-access-key", R]
    assert redact_argv(["x", "AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE"]) == ["x", f"AWS_ACCESS_KEY_ID={R}"]
    assert redact_argv(["claude", "--api-key=sk-ant-api03-abcdefghijklmnopqrstuvwxyz"]) == ["claude", f"--api-key={R}"]
    assert redact_argv(["x", "sk-ant-api03-abcdefghijklmnopqrstuvwxyz"]) == ["x", R]


def test_ordinary_command_lines_are_untouched() -> None:
    argv = ["python", "agent.py", "--max-tokens=4096", "--model", "claude", "--author", "me", "token-count.txt"]
    assert redact_argv(argv) == argv


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(st.text(max_size=60), max_size=8))
def test_redaction_keeps_the_shape_and_is_idempotent(argv: list[str]) -> None:
    once = redact_argv(argv)
    assert len(once) == len(argv) and redact_argv(once) == once
