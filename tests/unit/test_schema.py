"""The documented JSON schema: the README shows it, recorded events match it."""

import json
import pathlib

from bpfcap import _native, schema

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_readme_documents_the_schema() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("<!-- schema:begin", 1)[1].split("-->", 1)[1].split("<!-- schema:end -->", 1)[0]
    assert section.strip() == schema.markdown().strip(), "run `python -m bpfcap.schema --write`"


def test_native_stubs_have_the_generated_types_and_getters() -> None:
    stub = ROOT / "python/bpfcap/_native.pyi"
    text = stub.read_text()
    assert schema._replace_blocks(text, schema.stub_blocks()) == text, "run `python -m bpfcap.schema --write`"


def test_recorded_events_match_the_schema() -> None:
    data = json.loads((ROOT / "tests/data/process_records.json").read_text())
    events, _ = _native.decode_records([bytes.fromhex(r["hex"]) for r in data["records"]])
    for e in events:
        assert schema.event_errors(json.loads(e.to_json())) == []
    loss = json.loads(_native.loss_event(3, "sampled", 9).to_json())
    assert schema.event_errors(loss) == []


def test_schema_checks_catch_mistakes() -> None:
    good = {**{k: None for k in schema.COMMON}, "type": "process_fork", "ts_ns": 1, "time": "t", "pid": 1, "tid": 1,
            "ppid": 0, "uid": 0, "gid": 0, "comm": "x", "cgroup_id": 1, "mnt_ns": 1, "pid_ns": 1, "net_ns": 1,
            "child_pid": 2}
    assert schema.event_errors(good) == []
    assert schema.event_errors({**good, "child_pid": "2"}) == ["process_fork: child_pid = '2' is not int"]
    assert schema.event_errors({**good, "extra": 1}) == ["process_fork: unexpected key extra"]
    assert schema.event_errors({k: v for k, v in good.items() if k != "pid"}) == ["process_fork: missing pid"]
