"""How much host work each CUDA layer queues, counted by `benchmarks/host_ops.py` in the simulator
(kernels skipped): on a GPU the small layers are bound by Numba's launches and allocations in
Python, not by the GPU (benchmarks/GPU_RESULTS.md, run 3), so a change that adds one shows here."""

import importlib.util
import pathlib

import numpy as np
import pytest

from scratchdet.backend import simulated, to_device
from scratchdet.kernels.cuda import nn as cuda_nn

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "host_ops.py"

pytestmark = pytest.mark.skipif(not simulated(), reason="launches are counted in Numba's simulator")


@pytest.fixture(scope="module")
def host_ops():
    spec = importlib.util.spec_from_file_location("host_ops_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _zeros(*shape):
    return to_device(np.zeros(shape, np.float32), "cuda")


@pytest.mark.parametrize(("channels", "backward_launches"), [(3, 3), (7, 4)], ids=["few channels", "implicit GEMM"])
def test_a_convolution_layer_queues_one_launch_forward_and_three_or_four_backward(host_ops, channels, backward_launches):
    """Forward: the implicit GEMM into a new y. Backward: dW and db in one product, one sum over the
    images (into one new array holding both), and dX (swapping the filters' axes first when it is an
    implicit GEMM): no reduction of its own for db."""
    x, w, b, dy = _zeros(6, channels, 9, 10), _zeros(5, channels, 3, 3), _zeros(5), _zeros(6, 5, 9, 10)
    forward = host_ops.count_ops(lambda: cuda_nn.conv2d_forward(x, w, b, 1, 1))
    assert (forward["launches"], forward["allocations"]) == (1, 1)
    backward = host_ops.count_ops(lambda: cuda_nn.conv2d_backward(dy, x, w, 1, 1))
    assert (backward["launches"], backward["allocations"]) == (backward_launches, 2)
    weights_only = host_ops.count_ops(lambda: cuda_nn.conv2d_backward(dy, x, w, 1, 1, input_grad=False))
    assert (weights_only["launches"], weights_only["allocations"]) == (2, 1)


def test_a_linear_layer_backward_gets_its_bias_gradient_from_the_weight_gradients_product(host_ops):
    x, w, dy = _zeros(4, 7), _zeros(3, 7), _zeros(4, 3)
    counts = host_ops.count_ops(lambda: cuda_nn.linear_backward(dy, x, w))
    assert (counts["launches"], counts["allocations"]) == (2, 2)  # dx's product; dW's with db


def test_an_optimiser_step_updates_a_dozen_parameters_per_launch(host_ops):
    from scratchdet import nn

    model = nn.Sequential(*[nn.Linear(3, 3, rng=i) for i in range(7)]).to("cuda")  # 14 parameters
    x = _zeros(2, 3)
    model.backward(model.forward(x), input_grad=False)
    for optimizer in (nn.SGD(model, lr=0.1, momentum=0.9), nn.Adam(model)):
        optimizer.step()  # the state, created on the first step
        counts = host_ops.count_ops(optimizer.step)
        assert (counts["launches"], counts["allocations"]) == (2, 0)


def test_a_roi_pooling_layer_copies_host_rois_to_the_gpu_once_for_forward_and_backward(host_ops):
    from scratchdet import nn
    from scratchdet.errors import InvalidArgumentError

    layer = nn.RoIPool(2, 0.5)
    features = _zeros(2, 3, 8, 8)
    rois = np.array([[0, 0, 0, 7, 7], [1, 2, 2, 12, 9]], np.float64)

    def forward_backward():
        layer.backward(layer.forward(features, rois))

    assert host_ops.count_ops(forward_backward)["copies"] == 1
    with pytest.raises(InvalidArgumentError, match="batch indices"):
        layer.forward(features, np.array([[2, 0, 0, 4, 4]], np.float64))


def test_counting_leaves_no_cached_offset_tables_built_by_skipped_kernels(host_ops, rng):
    """A convolution of a shape first seen while counting (its offset-table kernels skipped) computes
    the CPU's numbers afterwards."""
    from scratchdet.backend import to_host
    from scratchdet.nn import functional as F

    x = rng.standard_normal((1, 2, 5, 6)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    xd, wd = to_device(x, "cuda"), to_device(w, "cuda")
    host_ops.count_ops(lambda: cuda_nn.conv2d_forward(xd, wd, None, 1, 1))
    np.testing.assert_allclose(to_host(cuda_nn.conv2d_forward(xd, wd, None, 1, 1)),
                               F.conv2d_forward(x, w, None, 1, 1), rtol=1e-5, atol=1e-5)


def test_the_script_prints_a_row_for_every_operation(host_ops, monkeypatch, capsys):
    bench = host_ops.sys.modules.get("bench_cuda")
    if bench is None:
        import bench_cuda as bench  # host_ops put benchmarks/ on the path
    monkeypatch.setattr(bench, "CONV_SHAPES", [(2, 3, 5, 5, 4), (2, 6, 5, 5, 4)])
    monkeypatch.setattr(bench, "LINEAR_SHAPE", (3, 7, 5))
    monkeypatch.setattr(bench, "TRAIN_BATCH", 2)
    monkeypatch.setattr(bench, "TRAIN_IMAGE", 8)
    monkeypatch.setattr(bench, "TRAIN_CHANNELS", (2, 3, 2))
    assert host_ops.main() == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + len(host_ops.operations())
    step = next(row for row in rows if row.startswith("| training step"))
    launches = int(step.split("|")[2])
    assert 20 < launches < 60
