"""The host side of the CUDA backend: how kernels are launched and device memory handed out.

These tests need Numba's real CUDA path, not its simulator: on a machine without a GPU, CI runs this
directory against the stand-in driver of `benchmarks/fake_cuda` (no kernel runs, so results are only
checked on a real GPU):

    FAKE_CUDA_MEMORY=4294967296 python benchmarks/fake_cuda/build.py python -m pytest tests/host_path

In any other process (the simulator, or no CUDA at all) every test here is skipped.
"""

import pytest
from numba import cuda

from scratchdet import backend


def _device_name():
    if backend.simulated() or not cuda.is_available():
        return None
    name = cuda.get_current_device().name
    return name.decode() if isinstance(name, bytes) else name


DEVICE = _device_name()
FAKE = DEVICE is not None and DEVICE.startswith("fake CUDA driver")


def pytest_configure(config):
    # Numba's advice on first launches (small grids) and on its linker are not what these tests check
    config.addinivalue_line("filterwarnings", "ignore:Grid size .* will likely result in GPU under-utilization")
    config.addinivalue_line("filterwarnings", "ignore:cuda.bindings.nvjitlink is not available")


def pytest_collection_modifyitems(config, items):
    if DEVICE is None:
        skip = pytest.mark.skip(reason="needs Numba's real CUDA path: a GPU, or benchmarks/fake_cuda's stand-in driver")
        for item in items:
            if "host_path" in str(item.fspath):
                item.add_marker(skip)


@pytest.fixture
def fake():
    """True against the stand-in driver (kernels do not run: results cannot be checked)."""
    return FAKE
