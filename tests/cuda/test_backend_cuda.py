"""The backend helpers with CUDA available (a GPU or the simulator)."""

import numpy as np
import pytest

from scratchdet import backend
from scratchdet.nn.layers import Conv2d


def test_available_lists_cuda_and_require_accepts_it():
    assert backend.available() == ("cpu", "cuda")
    backend.require("cuda")


def test_to_device_and_back_round_trips_without_copying_what_is_already_there(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    on_gpu = backend.to_device(x, "cuda")
    assert backend.is_cuda_array(on_gpu) and backend.device_of(on_gpu) == "cuda"
    assert backend.to_device(on_gpu, "cuda") is on_gpu
    np.testing.assert_array_equal(backend.to_device(on_gpu, "cpu"), x)


@pytest.mark.parametrize("shape", [(1,), (5, 7), (2, 3, 4)])
def test_zeros_like_fills_a_device_array_with_zeros(shape):
    garbage = backend.to_device(np.full(shape, 7.0, np.float32), "cuda")
    zeros = backend.zeros_like(garbage)
    assert backend.is_cuda_array(zeros)
    np.testing.assert_array_equal(backend.to_host(zeros), np.zeros(shape, np.float32))
    assert backend.empty_like(garbage).shape == shape


def test_layer_to_cuda_and_back_keeps_its_parameters(rng):
    conv = Conv2d(2, 3, 3, rng=rng)
    weight = conv.params["weight"].copy()
    conv.to("cuda")
    assert backend.is_cuda_array(conv.params["weight"]) and backend.is_cuda_array(conv.grads["bias"])
    conv.to("cpu")
    np.testing.assert_array_equal(conv.params["weight"], weight)


def test_numba_frees_device_memory_in_large_batches_unless_the_user_chose(monkeypatch):
    """Each batch of frees waits for the GPU; scratchdet raises Numba's default batch of 10 (common.py)."""
    import os

    from numba.cuda.core import config

    from scratchdet.kernels.cuda import common

    if "NUMBA_CUDA_MAX_PENDING_DEALLOCS_COUNT" in os.environ:
        assert config.CUDA_DEALLOCS_COUNT == int(os.environ["NUMBA_CUDA_MAX_PENDING_DEALLOCS_COUNT"])
    else:
        assert config.CUDA_DEALLOCS_COUNT >= common.PENDING_FREES
