import re

import pytest

from bpfcap import ConfigError, PerformanceConfig


def test_defaults_round_trip_through_json() -> None:
    cfg = PerformanceConfig()
    assert PerformanceConfig.from_json(cfg.to_json()) == cfg
    assert set(cfg.to_dict()) == {"ringBufferSize", "batchSize", "pollInterval", "maxEventsPerSec", "samplingRate", "rings"}
    per_type = PerformanceConfig(sampling_rate={"file_write": 0.5}, max_events_per_sec=10)
    assert PerformanceConfig.from_json(per_type.to_json()) == per_type
    assert per_type.kernel_sampling() == (1.0, [(9, 0.5)])


def test_json_names_and_duration_strings() -> None:
    cfg = PerformanceConfig.from_json('{"ringBufferSize": 1048576, "batchSize": 64, "pollInterval": "5ms"}')
    assert (cfg.ring_buffer_size, cfg.batch_size, cfg.poll_interval) == (1 << 20, 64, 0.005)
    assert cfg.wakeup_bytes == 64 * 96


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("ringBufferSize", 3000, "ringBufferSize = 3000: must be a power of two"),
        ("ringBufferSize", 1024, "ringBufferSize = 1024: must be a power of two from 4096"),
        ("ringBufferSize", 1 << 31, "to 1073741824 bytes"),
        ("batchSize", 0, "batchSize = 0: must be an integer from 1 to 1000000"),
        ("batchSize", True, "batchSize = True"),
        ("pollInterval", 0, "pollInterval = 0: must be from 0.1ms to 10s"),
        ("pollInterval", "soon", "pollInterval = 'soon': expected seconds"),
        ("maxEventsPerSec", -1, "maxEventsPerSec = -1: must be an integer from 0"),
        ("rings", 3, "rings = 3: must be 1, 2 or 4"),
        ("samplingRate", 0, "samplingRate = 0: must be in (0, 1]"),
        ("samplingRate", 1.5, "samplingRate = 1.5"),
        ("samplingRate", {"file_write": 2}, "samplingRate['file_write'] = 2"),
        ("samplingRate", {"nope": 0.5}, "invalid samplingRate key: unknown event type 'nope'"),
    ],
)
def test_invalid_values_name_field_value_and_range(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        PerformanceConfig.from_dict({field: value})


def test_unknown_fields_and_bad_json_are_refused() -> None:
    with pytest.raises(ConfigError, match="unknown performance config field"):
        PerformanceConfig.from_dict({"ringbuffersize": 4096})
    with pytest.raises(ConfigError, match="not valid JSON"):
        PerformanceConfig.from_json("{")
    with pytest.raises(ConfigError, match="must be a JSON object"):
        PerformanceConfig.from_json("[1]")
