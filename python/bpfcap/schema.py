"""The JSON shape of events and session summaries, documented in the README
(the tests check both the README and real output against it). The built-in
event types' keys come from their definitions in the core
(`crates/bpfcap-common/src/event_types.rs`); the common keys, `probe`, `loss` and the
summary are defined here.

Types: "int", "str", "bool", "list[str]", "list[int]", "dict", "list[dict]";
a trailing "?" means the value may be null.
"""

from __future__ import annotations

from typing import Any

from . import _native

COMMON: dict[str, str] = {
    "type": "str",
    "ts_ns": "int",
    "time": "str",
    "pid": "int",
    "tid": "int",
    "ppid": "int",
    "uid": "int",
    "gid": "int",
    "comm": "str",
    "cgroup_id": "int",
    "container_id": "str?",
    "pod_uid": "str?",
    "mnt_ns": "int",
    "pid_ns": "int",
    "net_ns": "int",
    "session": "str?",
}

TYPES: list[dict[str, Any]] = _native.event_schema()

EVENTS: dict[str, dict[str, str]] = {
    t["name"]: {key: kind for key, kind, optional, _ in t["fields"] if not optional} for t in TYPES
}
"""Keys each event type adds to COMMON. (`probe` and `loss` events: see PROBE and LOSS.)"""

OPTIONAL: dict[str, dict[str, str]] = {
    t["name"]: extra for t in TYPES if (extra := {key: kind for key, kind, optional, _ in t["fields"] if optional})
}
"""Keys an event may have in some cases only."""

PROBE: dict[str, str] = {"probe": "str?", "args": "list[int]", "ret": "int", "fields": "dict", "program": "str", "raw": "str"}
"""A `probe` event has COMMON, `probe`, and one of: `args`; `ret`; `fields`; `program` with `raw`."""

LOSS: dict[str, str] = {"type": "str", "ts_ns": "int", "time": "str", "count": "int", "reason": "str", "lost_type": "str?"}

SUMMARY: dict[str, str] = {
    "command": "list[str]",
    "label": "str",
    "duration_s": "float",
    "processes": "list[dict]",
    "files": "list[dict]",
    "streams": "list[dict]",
    "tcp": "list[dict]",
    "udp": "list[dict]",
    "exec_checks": "list[dict]",
    "file_permissions": "list[dict]",
    "deleted": "list[dict]",
    "renamed": "list[dict]",
    "dirs_created": "list[dict]",
    "failed_changes": "list[dict]",
    "events": "dict",
    "lost": "dict",
}
SUMMARY_PARTS: dict[str, dict[str, str]] = {
    "processes": {"pid": "int", "ppid": "int", "argv": "list[str]?", "filename": "str?", "exit_code": "int?",
                  "signal": "int?", "children": "list[dict]"},
    "files": {"path": "str", "opens": "int", "reads": "int", "read_bytes": "int", "writes": "int", "written_bytes": "int"},
    "streams": {"path": "str", "reads": "int", "read_bytes": "int", "writes": "int", "written_bytes": "int"},
    "tcp": {"family": "str", "daddr": "str", "dport": "int", "connects": "int", "failed": "int", "closes": "int"},
    "udp": {"family": "str", "daddr": "str", "dport": "int", "sends": "int", "bytes": "int"},
    "exec_checks": {"filename": "str", "count": "int"},
    "file_permissions": {"path": "str", "mask": "int", "access": "str", "count": "int"},
    "deleted": {"path": "str", "dir": "bool", "count": "int"},
    "renamed": {"path": "str", "new_path": "str", "count": "int"},
    "dirs_created": {"path": "str", "count": "int"},
    "failed_changes": {"type": "str", "path": "str", "new_path": "str?", "error": "int", "count": "int"},
}

_PY: dict[str, Any] = {"int": int, "str": str, "bool": bool, "float": (int, float), "dict": dict}


def check(value: Any, kind: str) -> bool:
    """Whether `value` has the JSON type `kind`."""
    if kind.endswith("?"):
        return value is None or check(value, kind[:-1])
    if kind.startswith("list["):
        inner = kind[5:-1]
        return isinstance(value, list) and all(check(v, inner) for v in value)
    t = _PY[kind]
    return isinstance(value, t) and not (kind == "int" and isinstance(value, bool))


def event_errors(d: dict[str, Any]) -> list[str]:
    """What is wrong with an event's JSON object, against the schema ([] if nothing)."""
    t = d.get("type")
    if t == "loss":
        expected = LOSS
    elif t == "probe":
        present = {k: v for k, v in PROBE.items() if k in d}
        expected = {**COMMON, **present}
        if "probe" not in d:
            return ["probe event without `probe`"]
    elif t in EVENTS:
        expected = {**COMMON, **EVENTS[t]}
    else:
        return [f"unknown type {t!r}"]
    errors = [f"{t}: missing {k}" for k in expected if k not in d]
    extra = set(d) - set(expected) - set(OPTIONAL.get(t, {}))
    errors += [f"{t}: unexpected key {k}" for k in sorted(extra)]
    kinds = {**expected, **OPTIONAL.get(t, {})}
    errors += [f"{t}: {k} = {d[k]!r} is not {kinds[k]}" for k in kinds if k in d and not check(d[k], kinds[k])]
    return errors


def summary_errors(d: dict[str, Any]) -> list[str]:
    errors = [f"summary: missing {k}" for k in SUMMARY if k not in d]
    errors += [f"summary: {k} is not {t}" for k, t in SUMMARY.items() if k in d and not check(d[k], t)]
    for part, keys in SUMMARY_PARTS.items():
        items = list(d.get(part, []))
        while items:
            item = items.pop()
            errors += [f"{part}: missing {k}" for k in keys if k not in item]
            errors += [f"{part}: {k} = {item[k]!r} is not {t}" for k, t in keys.items() if k in item and not check(item[k], t)]
            items += item.get("children", []) if part == "processes" else []
    return errors


MEANING: dict[str, str] = {
    "type": "event type name",
    "ts_ns": "kernel time of the event (CLOCK_MONOTONIC, ns)",
    "time": "wall-clock time, RFC 3339 UTC with nanoseconds",
    "pid": "process (thread-group) id",
    "tid": "thread id",
    "ppid": "parent's pid",
    "uid": "user id",
    "gid": "group id",
    "comm": "command name (15 bytes at most)",
    "cgroup_id": "cgroup v2 id",
    "container_id": "container of the cgroup (Docker, containerd, CRI-O, Podman), or null",
    "pod_uid": "Kubernetes pod of the cgroup, or null",
    "mnt_ns": "mount namespace inode",
    "pid_ns": "pid namespace inode",
    "net_ns": "network namespace inode",
    "session": "session label of the process tree (`track`, `session`, `exec --label`), or null",
    "exit_code": "exit status 0-255, null when killed by a signal",
    "probe": "the user-defined probe's name",
    "args": "integer arguments (kprobe, uprobe, raw tracepoint, LSM)",
    "ret": "return value (kretprobe, uretprobe)",
    "fields": "a tracepoint's fields by name, decoded from its format file",
    "program": "the program of a user's own object",
    "raw": "a user's own object's record, hex",
    "count": "events lost",
    "reason": "`kernel_ring_full`, `subscriber_queue_full`, `sampled`, `rate_limited`",
    "lost_type": "the type lost, when known",
    "command": "the command and its arguments",
    "label": "the session label",
    "duration_s": "seconds from the command's start to its exit",
    "processes": "the process tree: pid, ppid, argv, filename, exit_code, signal, children",
    "files": "per path: opens, reads, read_bytes, writes, written_bytes (files only)",
    "streams": "per pipe, socket or anonymous inode (`pipe:[INODE]`, `socket:[INODE]`, `anon_inode:[eventfd]`): reads, read_bytes, writes, written_bytes",
    "tcp": "per destination the run connected to: family, daddr, dport, connects (established), failed (connects refused or timed out), closes (of the established)",
    "udp": "per destination: family, daddr, dport, sends, bytes",
    "exec_checks": "per filename: count",
    "file_permissions": "per path and mask: access (read, write, ...), count",
    "deleted": "per path deleted: dir (a directory), count",
    "renamed": "per rename done: path (old), new_path, count",
    "dirs_created": "per directory created: path, count",
    "failed_changes": "per delete, rename or mkdir that failed (nothing changed): type, path, new_path (renames), error (errno), count",
    "events": "events by type",
    "lost": "events lost, by reason",
}


def _row(key: str, kind: str, meaning: str | None = None) -> str:
    t = kind.rstrip("?") + (" or null" if kind.endswith("?") else "")
    return f"| `{key}` | {t} | {meaning or MEANING[key]} |"


def markdown() -> str:
    """The README's schema section (kept in step by a test)."""
    head = "| key | type | meaning |\n| --- | --- | --- |"
    out = ["Common keys (all events but `loss`):", "", head, *(_row(k, v) for k, v in COMMON.items())]
    for t in TYPES:
        out += ["", f"`{t['name']}`: {t['doc']}", "", head, *(_row(k, v, m) for k, v, _, m in t["fields"])]
    out += ["", "`probe` (common keys, `probe`, and one of `args`, `ret`, `fields`, or `program` with `raw`):", "", head,
            *(_row(k, v) for k, v in PROBE.items())]
    out += ["", "`loss`:", "", head, *(_row(k, v) for k, v in LOSS.items())]
    out += ["", "Session summary (`bpfcap exec --summary FILE`, `Session.summary.to_dict()`):", "", head,
            *(_row(k, v) for k, v in SUMMARY.items())]
    return "\n".join(out)


def update_readme(path: str) -> None:
    """Replaces the README's schema section (between its markers) with `markdown()`."""
    import pathlib

    readme = pathlib.Path(path)
    text = readme.read_text()
    head, rest = text.split("<!-- schema:begin", 1)
    marker, rest = rest.split("-->", 1)
    _, tail = rest.split("<!-- schema:end -->", 1)
    readme.write_text(f"{head}<!-- schema:begin{marker}-->\n{markdown()}\n<!-- schema:end -->{tail}")


_PY_TYPE = {"str": "str", "int": "int", "bool": "bool", "list[str]": "list[str]"}


def stub_blocks() -> dict[str, str]:
    """The generated parts of `_native.pyi`: the event type enum, and one
    getter per payload key (typed by the fields of that key)."""
    members = [f"    {name.upper()} = {tid}" for tid, name in _native.event_types()]
    enum_block = "\n".join([
        "class _EventType(IntEnum):",
        '    """Event types (`bpfcap.EventType`); the ids are part of the public contract."""',
        *members,
        "    @property",
        "    def json_name(self) -> str: ...",
        "    @classmethod",
        "    def from_name(cls, name: str) -> _EventType: ...",
    ])
    keys: dict[str, str] = {}
    for t in TYPES:
        for key, kind, _, _ in t["fields"]:
            base = kind.rstrip("?")
            if keys.setdefault(key, base) != base:
                raise ValueError(f"key {key!r} is {keys[key]} in one type and {base} in {t['name']}")
    getters = "\n".join(f"    @property\n    def {k}(self) -> Optional[{_PY_TYPE[v]}]: ..." for k, v in keys.items())
    return {"event types": enum_block, "payload getters": getters}


def _replace_blocks(text: str, blocks: dict[str, str]) -> str:
    for name, body in blocks.items():
        begin, end = f"# <generated {name}: python -m bpfcap.schema --write>", f"# </generated {name}>"
        head, rest = text.split(begin, 1)
        indent = head[head.rfind("\n") + 1:]
        _, tail = rest.split(end, 1)
        text = f"{head}{begin}\n{body}\n{indent}{end}{tail}"
    return text


def update_stubs(path: str) -> None:
    """Replaces the generated blocks of `_native.pyi`."""
    import pathlib

    stub = pathlib.Path(path)
    stub.write_text(_replace_blocks(stub.read_text(), stub_blocks()))


if __name__ == "__main__":
    import pathlib
    import sys

    root = pathlib.Path(__file__).resolve().parents[2]
    if sys.argv[1:2] == ["--write"]:
        update_readme(str(root / "README.md"))
        update_stubs(str(root / "python/bpfcap/_native.pyi"))
    elif sys.argv[1:2] == ["--readme"]:
        update_readme(sys.argv[2] if len(sys.argv) > 2 else "README.md")
    else:
        print(markdown())
