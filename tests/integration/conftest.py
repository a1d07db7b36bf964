import os

import pytest

# Every test here runs real BPF programs in the running kernel.
pytestmark = pytest.mark.root


# Both event loops on the host; the VM runs pick one (BPFCAP_TEST_BACKENDS=asyncio)
# to fit several kernels into the CI budget.
BACKENDS = os.environ.get("BPFCAP_TEST_BACKENDS", "asyncio,trio").split(",")


@pytest.fixture(params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.root)
