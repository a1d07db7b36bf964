"""The JSON shape of events and session summaries: one place, documented in
the README (the tests check both the README and real output against it).

Types: "int", "str", "bool", "list[str]", "list[int]", "dict", "list[dict]";
a trailing "?" means the value may be null.
"""

from __future__ import annotations

from typing import Any

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

NET = {"family": "str", "saddr": "str?", "daddr": "str", "sport": "int?", "dport": "int"}

EVENTS: dict[str, dict[str, str]] = {
    "process_exec": {"filename": "str", "argv": "list[str]", "argv_truncated": "bool"},
    "process_exit": {"exit_code": "int?", "signal": "int?", "core_dumped": "bool"},
    "process_fork": {"child_pid": "int"},
    "tcp_connect": NET,
    "tcp_close": NET,
    "udp_send": {"family": "str", "daddr": "str", "dport": "int", "bytes": "int"},
    "file_open": {"path": "str", "path_truncated": "bool", "fd": "int?", "flags": "int?"},
    "file_read": {"path": "str", "path_truncated": "bool", "fd": "int?", "bytes": "int?"},
    "file_write": {"path": "str", "path_truncated": "bool", "fd": "int?", "bytes": "int?"},
    "exec_check": {"filename": "str"},
    "file_permission": {"path": "str", "path_truncated": "bool", "fd": "int?", "mask": "int?"},
}
"""Keys each event type adds to COMMON. (`probe` and `loss` events: see PROBE and LOSS.)"""

# Keys an event may have in some cases only.
OPTIONAL: dict[str, dict[str, str]] = {"process_exec": {"filename_truncated": "bool"}}

PROBE: dict[str, str] = {"probe": "str?", "args": "list[int]", "ret": "int", "fields": "dict", "program": "str", "raw": "str"}
"""A `probe` event has COMMON, `probe`, and one of: `args`; `ret`; `fields`; `program` with `raw`."""

LOSS: dict[str, str] = {"type": "str", "ts_ns": "int", "time": "str", "count": "int", "reason": "str", "lost_type": "str?"}

SUMMARY: dict[str, str] = {
    "command": "list[str]",
    "label": "str",
    "exit_code": "int",
    "duration_s": "float",
    "processes": "list[dict]",
    "files": "list[dict]",
    "tcp": "list[dict]",
    "udp": "list[dict]",
    "exec_checks": "list[dict]",
    "file_permissions": "list[dict]",
    "events": "dict",
    "lost": "dict",
}
SUMMARY_PARTS: dict[str, dict[str, str]] = {
    "processes": {"pid": "int", "ppid": "int", "argv": "list[str]?", "filename": "str?", "exit_code": "int?",
                  "signal": "int?", "children": "list[dict]"},
    "files": {"path": "str", "opens": "int", "reads": "int", "read_bytes": "int", "writes": "int", "written_bytes": "int"},
    "tcp": {"family": "str", "daddr": "str", "dport": "int", "connects": "int", "closes": "int"},
    "udp": {"family": "str", "daddr": "str", "dport": "int", "sends": "int", "bytes": "int"},
    "exec_checks": {"filename": "str", "count": "int"},
    "file_permissions": {"path": "str", "mask": "int", "access": "str", "count": "int"},
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
