"""The backend helpers with CUDA available (a GPU or the simulator)."""

import numpy as np
import pytest

from scratchdet import backend, nn
from scratchdet.errors import InvalidArgumentError
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


def test_to_device_keeps_a_zero_dimensional_array_zero_dimensional():
    # (np.ascontiguousarray makes it (1,))
    on_gpu = backend.to_device(np.float32(2.5) * np.ones(()), "cuda")
    assert on_gpu.shape == () and backend.to_host(on_gpu) == 2.5


def test_astype_of_a_model_on_the_gpu_keeps_it_there(rng):
    # (it once copied the parameters to the host while the model still said "cuda")
    model = nn.Sequential(Conv2d(2, 3, 3, rng=rng), nn.Flatten(), nn.Linear(3, 2, rng=rng))
    weight = model.layers[0].params["weight"].copy()
    model.to("cuda").astype(np.float64)
    for _, layer, key in model.named_parameters():
        assert backend.is_cuda_array(layer.params[key]) and layer.params[key].dtype == np.float64
        assert backend.is_cuda_array(layer.grads[key]) and not backend.to_host(layer.grads[key]).any()
    np.testing.assert_array_equal(backend.to_host(model.layers[0].params["weight"]), weight.astype(np.float64))
    x = backend.to_device(rng.standard_normal((1, 2, 3, 3)), "cuda")
    assert backend.to_host(model.forward(x)).shape == (1, 2)


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


def test_a_model_on_the_gpu_given_a_numpy_input_names_the_device_mismatch(rng):
    model = nn.Sequential(Conv2d(2, 3, 3, rng=rng)).to("cuda")
    with pytest.raises(InvalidArgumentError, match="is a CUDA device array but the input is a NumPy array"):
        model.forward(rng.standard_normal((1, 2, 5, 5)).astype(np.float32))


def test_optimiser_state_follows_the_model_between_devices():
    """A model moved after some steps keeps its optimiser state (it moves with the parameters, in the
    base class: Adam's two moments here), so the steps on the new device continue those on the old
    one exactly as if it had stayed."""
    def run(devices):
        model = nn.Sequential(nn.Linear(6, 3, rng=np.random.default_rng(5), dtype=np.float64))
        opt = nn.Adam(model, lr=0.1)
        x = rng_x.standard_normal((2, 6))
        for device in devices:
            model.to(device)
            y = model.forward(backend.to_device(x, device))
            model.backward(backend.to_device(np.ones(y.shape), device))
            opt.step()
        model.to("cpu")
        return model.layers[0].params["weight"]

    rng_x = np.random.default_rng(6)
    stayed = run(["cpu", "cpu", "cpu"])
    rng_x = np.random.default_rng(6)
    moved = run(["cpu", "cuda", "cpu"])
    np.testing.assert_allclose(moved, stayed, rtol=1e-12, atol=1e-12)


def test_numba_frees_device_memory_in_large_batches_unless_the_user_chose(monkeypatch):
    """Each batch of frees waits for the GPU; scratchdet raises Numba's default batch of 10 (common.py)."""
    import os

    from numba.cuda.core import config

    from scratchdet.kernels.cuda import common

    if "NUMBA_CUDA_MAX_PENDING_DEALLOCS_COUNT" in os.environ:
        assert config.CUDA_DEALLOCS_COUNT == int(os.environ["NUMBA_CUDA_MAX_PENDING_DEALLOCS_COUNT"])
    else:
        assert config.CUDA_DEALLOCS_COUNT >= common.PENDING_FREES


def test_part_views_elements_of_a_flat_array_in_a_shape():
    """`common.part`, as the backward passes split one gradient array into dW and db."""
    from scratchdet.kernels.cuda import common

    values = np.arange(12, dtype=np.float32)
    base = backend.to_device(values, "cuda")
    np.testing.assert_array_equal(common.part(base, 2, (2, 3)).copy_to_host(), values[2:8].reshape(2, 3))
    np.testing.assert_array_equal(common.part(base, 12, (0,)).copy_to_host(), values[12:])
    for start, shape in ((10, (3,)), (-1, (2,))):
        with pytest.raises(IndexError):
            common.part(base, start, shape)
    with pytest.raises(IndexError):
        common.part(backend.to_device(values.reshape(3, 4), "cuda"), 0, (2,))
