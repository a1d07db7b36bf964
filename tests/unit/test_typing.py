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


def readme_examples() -> str:
    """The README's Python examples as one module: a fragment that uses
    `await` at the top level becomes the body of a function given what the
    README's prose names (`mgr`, `agent_pid`)."""
    import re
    import textwrap

    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert blocks
    out = ["from bpfcap import *  # noqa: F403", "from bpfcap import CaptureManager, EventType", ""]
    for i, code in enumerate(blocks):
        if re.search(r"^(await |async )", code, re.M):
            imports = [line for line in code.splitlines() if line.startswith(("import ", "from "))]
            body = "\n".join(line for line in code.splitlines() if line not in imports)
            out += imports + [f"async def example_{i}(mgr: CaptureManager, agent_pid: int) -> None:",
                              textwrap.indent(body, "    "), ""]
        else:
            out += [f"def example_{i}() -> None:", textwrap.indent(code, "    "), ""]
    return "\n".join(out)


def test_the_readme_examples_type_check_strictly(tmp_path: pathlib.Path) -> None:
    # Events are typed: a misspelt attribute or a wrong use of one fails here.
    (tmp_path / "examples.py").write_text(readme_examples())
    r = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(tmp_path / "examples.py")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr + readme_examples()
