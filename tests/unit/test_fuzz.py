"""Fuzzing the inputs a user hands bpfcap: filter, performance config and
program spec documents, and ring records through the native decoder. Bad input
must raise ConfigError (naming what was wrong) or decode to a counted error;
nothing else may escape. Bounded (a few hundred examples each) to run in CI."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpfcap import BPFProgSpec, ConfigError, EventFilter, PerformanceConfig, _native
from bpfcap.schema import event_errors

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True), st.text(max_size=20))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                           max_leaves=12)


def documents(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects whose keys are mostly the real field names, with any values."""
    return st.dictionaries(st.one_of(st.sampled_from(keys), st.text(max_size=10)), json_values, max_size=len(keys))


FILTER_KEYS = list(EventFilter().to_dict()) + ["pids", "comm", "uids", "cgroupIds", "cgroupPaths", "containerIds",
                                               "eventTypes", "excludePids", "excludeComm"]
CONFIG_KEYS = list(PerformanceConfig().to_dict())
SPEC_KEYS = ["name", "type", "target", "object", "program", "args", "strings", "fields"]


def only_config_errors(build: Any, doc: Any) -> None:
    try:
        build(doc)
    except ConfigError as e:
        assert str(e)  # says what was wrong


@FUZZ
@given(documents(FILTER_KEYS))
def test_filter_documents(doc: dict[str, Any]) -> None:
    only_config_errors(EventFilter.from_dict, doc)


@FUZZ
@given(documents(CONFIG_KEYS))
def test_performance_config_documents(doc: dict[str, Any]) -> None:
    only_config_errors(PerformanceConfig.from_dict, doc)


@FUZZ
@given(documents(SPEC_KEYS))
def test_program_spec_documents(doc: dict[str, Any]) -> None:
    only_config_errors(BPFProgSpec.from_dict, doc)


@FUZZ
@given(st.one_of(st.binary(max_size=64), st.text(max_size=64), json_values.map(json.dumps)))
def test_json_text(text: str | bytes) -> None:
    for parse in (EventFilter.from_json, PerformanceConfig.from_json, BPFProgSpec.from_json):
        only_config_errors(parse, text)


RECORDS = [bytes.fromhex(r["hex"]) for r in json.loads(Path(__file__).parent.parent.joinpath("data/process_records.json").read_text())["records"]]


@st.composite
def mutated_records(draw: st.DrawFn) -> bytes:
    """A recorded record with a few bytes changed and perhaps cut short or extended."""
    rec = bytearray(draw(st.sampled_from(RECORDS)))
    for _ in range(draw(st.integers(0, 6))):
        rec[draw(st.integers(0, len(rec) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(rec) + 16))
    return bytes(rec[:cut]) + draw(st.binary(max_size=16)) if cut > len(rec) else bytes(rec[:cut])


@st.composite
def shaped_records(draw: st.DrawFn) -> bytes:
    """Any kind (file, network, probe...), any flags, an honest size, random bytes."""
    body = draw(st.binary(min_size=48, max_size=700))
    kind, flags = draw(st.integers(0, 15)), draw(st.integers(0, 0xFFFF))
    return struct.pack("<HHI", kind, flags, len(body) + 8) + body


@FUZZ
@given(st.lists(st.one_of(mutated_records(), shaped_records(), st.binary(max_size=300)), max_size=8))
def test_decoded_records_are_events_or_counted_errors(records: list[bytes]) -> None:
    events, stats = _native.decode_records(records)
    errors = stats["short"] + stats["bad_size"] + stats["unknown_kind"] + stats["oversized"]
    assert stats["received"] == len(events) and len(events) + errors == len(records)
    for e in events:
        d = e.to_dict()
        assert event_errors(d) == [], d  # whatever the bytes said, the event keeps its documented shape
        assert orjson.loads(e.to_json()) == orjson.loads(orjson.dumps(d))
