"""Without a GPU (and without the simulator) the CUDA backend is reported missing, clearly, and the
CPU backend keeps working."""

import numpy as np
import pytest

from scratchdet import backend
from scratchdet.errors import BackendUnavailableError
from scratchdet.nn import functional as F
from scratchdet.nn.layers import Conv2d

pytestmark = pytest.mark.skipif(
    "cuda" in backend.available(), reason="a GPU or the CUDA simulator is present: CUDA is available here"
)


def test_available_lists_only_cpu_without_gpu():
    assert backend.available() == ("cpu",)


def test_require_cuda_without_gpu_names_the_problem_and_the_simulator():
    with pytest.raises(BackendUnavailableError, match="no CUDA GPU") as info:
        backend.require("cuda")
    assert "NUMBA_ENABLE_CUDASIM" in str(info.value)


def test_moving_a_layer_to_cuda_without_gpu_raises_and_leaves_it_on_cpu(rng):
    conv = Conv2d(2, 3, 3, padding=1, rng=rng)
    with pytest.raises(BackendUnavailableError):
        conv.to("cuda")
    x = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
    y = conv.forward(x)
    assert isinstance(y, np.ndarray) and y.shape == (1, 3, 5, 5)


def test_cpu_backend_works_without_gpu(rng):
    x = rng.standard_normal((2, 3)).astype(np.float32)
    np.testing.assert_array_equal(F.relu_forward(x), np.maximum(x, 0))
    assert backend.to_device(x, "cpu") is x


def test_releasing_cached_gpu_memory_without_a_gpu_does_nothing():
    backend.release_cached_memory()
    assert backend.available() == ("cpu",)
