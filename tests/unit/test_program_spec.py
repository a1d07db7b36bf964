import pytest

from bpfcap import BPFProgSpec, ConfigError, SupportedProbes


def test_supported_probes_are_the_specs_eleven_and_the_file_changes_with_plans() -> None:
    names = [p["name"] for p in SupportedProbes]
    assert names == [
        "sched_process_exec", "sched_process_exit", "sched_process_fork", "tcp_connect", "tcp_close",
        "udp_sendmsg", "vfs_open", "vfs_read", "vfs_write", "bprm_check_security", "file_permission",
        "file_delete", "file_rename", "file_mkdir",
    ]
    plans = {p["name"]: [m for m, _ in p["plans"]] for p in SupportedProbes}
    assert plans["tcp_connect"] == ["kprobe", "fentry", "tracepoint"]
    assert plans["file_permission"] == ["lsm", "fentry", "kprobe", "tracepoint"]


def test_json_round_trip() -> None:
    spec = BPFProgSpec.from_json('{"name": "u", "type": "tracepoint", "target": "syscalls:sys_enter_unlinkat"}')
    assert spec == BPFProgSpec("u", "tracepoint", "syscalls:sys_enter_unlinkat")
    assert BPFProgSpec.from_dict(spec.to_dict()) == spec
    assert BPFProgSpec("tcp_connect").builtin


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(name=""), "invalid name = ''"),
        (dict(name="nope"), "not a built-in probe"),
        (dict(name="x", type="kprobe"), "a kprobe needs a target"),
        (dict(name="x", type="bogus", target="t"), "invalid type = 'bogus'"),
        (dict(name="x", type="tracepoint", target="a:b", object="o.o"), "give both an object file and a program"),
        (dict(name="x", type="builtin", target="t", object="o", program="p"), "for an object's program"),
    ],
)
def test_invalid_specs_name_the_field(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BPFProgSpec(**kwargs)


def test_unknown_json_fields() -> None:
    with pytest.raises(ConfigError, match="unknown program spec field"):
        BPFProgSpec.from_dict({"name": "tcp_connect", "targte": "x"})
