import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

# Both event loops on the host; the VM runs pick one (BPFCAP_TEST_BACKENDS=asyncio)
# to fit several kernels into the CI budget.
BACKENDS = os.environ.get("BPFCAP_TEST_BACKENDS", "asyncio,trio").split(",")


@pytest.fixture(params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Every test here runs real BPF programs in the running kernel. (This hook
    # sees the whole session's items: only this directory's are marked.)
    for item in items:
        if HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.root)
