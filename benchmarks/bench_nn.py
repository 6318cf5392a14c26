"""Conv-net kernels: scratchdet's forward + backward against PyTorch CPU, same run, same thread count.

Run: `python -m pytest benchmarks/bench_nn.py -s`. Both libraries get 2 threads
(`torch.set_num_threads(2)`, `numba.set_num_threads(2)`); the inputs are float32 NCHW. Each test times
one forward and one backward (all gradients) and prints ours / torch (the ratio, <= 1 means we are no
slower) and, for convolutions, the GFLOP/s reached: 3 matrix products of 2*N*K*C*kh*kw*H'*W' flops
each (forward, input gradient, filter gradient), to set beside the machine's single-precision GEMM peak.
"""

import numba
import numpy as np
import pytest

from scratchdet.nn import functional as F

torch = pytest.importorskip("torch")

THREADS = 2

# (N, C, H, W, K): 3x3 filters, stride 1, padding 1
CONV_SHAPES = [(64, 3, 64, 64, 32), (64, 32, 32, 32, 64), (64, 64, 16, 16, 128), (256, 3, 32, 32, 16)]


@pytest.fixture(autouse=True)
def threads():
    torch.set_num_threads(THREADS)
    numba.set_num_threads(THREADS)


def _report(benchmark, flops=None):
    info = benchmark.extra_info
    ratio = info["ours_s"] / info["peer_s"]
    info["ratio"] = ratio
    line = f"{benchmark.name}: ours {info['ours_s'] * 1e3:.1f} ms, torch {info['peer_s'] * 1e3:.1f} ms, ratio ours/torch {ratio:.2f}"
    if flops is not None:
        info["ours_gflops"] = flops / info["ours_s"] / 1e9
        info["torch_gflops"] = flops / info["peer_s"] / 1e9
        line += f", ours {info['ours_gflops']:.0f} GFLOP/s, torch {info['torch_gflops']:.0f} GFLOP/s"
    print(line)


def _torch_leaf(a):
    return torch.from_numpy(a.copy()).requires_grad_(True)


@pytest.mark.parametrize("shape", CONV_SHAPES, ids=lambda s: "x".join(map(str, s[:4])) + f"-{s[4]}")
def test_conv2d_forward_backward(compare_with_peer, benchmark, shape):
    n, c, h, w, k = shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, w), dtype=np.float32)
    weight = (rng.standard_normal((k, c, 3, 3), dtype=np.float32) * np.sqrt(2.0 / (c * 9))).astype(np.float32)
    bias = np.zeros(k, dtype=np.float32)
    dy = rng.standard_normal((n, k, h, w), dtype=np.float32)
    xt, wt, bt, dyt = _torch_leaf(x), _torch_leaf(weight), _torch_leaf(bias), torch.from_numpy(dy)

    def ours():
        y = F.conv2d_forward(x, weight, bias, stride=1, padding=1)
        return y, F.conv2d_backward(dy, x, weight, stride=1, padding=1)

    def theirs():
        xt.grad = wt.grad = bt.grad = None
        torch.nn.functional.conv2d(xt, wt, bt, stride=1, padding=1).backward(dyt)

    y, (dx, dw, db) = compare_with_peer(ours, theirs, "torch conv2d", repeat=5)
    theirs()
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(dw, wt.grad.numpy(), rtol=1e-3, atol=1e-2)
    _report(benchmark, flops=3 * 2 * n * k * c * 9 * h * w)


def test_maxpool2d_forward_backward(compare_with_peer, benchmark):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 64, 32, 32), dtype=np.float32)
    dy = rng.standard_normal((64, 64, 16, 16), dtype=np.float32)
    xt, dyt = _torch_leaf(x), torch.from_numpy(dy)

    def ours():
        return F.maxpool2d_forward(x, 2, 2), F.maxpool2d_backward(dy, x, 2, 2)

    def theirs():
        xt.grad = None
        torch.nn.functional.max_pool2d(xt, 2, 2).backward(dyt)

    compare_with_peer(ours, theirs, "torch max_pool2d", repeat=5)
    _report(benchmark)


def test_linear_forward_backward(compare_with_peer, benchmark):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 4096), dtype=np.float32)
    weight = rng.standard_normal((1024, 4096), dtype=np.float32) * 0.01
    bias = np.zeros(1024, dtype=np.float32)
    dy = rng.standard_normal((256, 1024), dtype=np.float32)
    xt, wt, bt, dyt = _torch_leaf(x), _torch_leaf(weight), _torch_leaf(bias), torch.from_numpy(dy)

    def ours():
        return F.linear_forward(x, weight, bias), F.linear_backward(dy, x, weight)

    def theirs():
        xt.grad = wt.grad = bt.grad = None
        torch.nn.functional.linear(xt, wt, bt).backward(dyt)

    compare_with_peer(ours, theirs, "torch linear", repeat=5)
    _report(benchmark, flops=3 * 2 * 256 * 4096 * 1024)


def test_roi_pool_forward_backward(compare_with_peer, benchmark):
    """Fast R-CNN's shape: 2 images' conv5 maps (512 x 38 x 50, a 608 x 800 image at 1/16), 128 RoIs
    each, 7 x 7 bins.

    torchvision is not installed here; the peer is then the usual pure-PyTorch RoI pooling, a crop per
    RoI followed by `adaptive_max_pool2d` (its bins floor(i*h/7) .. ceil((i+1)*h/7) are torchvision's
    for RoIs inside the map, which these are), and the outputs are checked equal.
    """
    rng = np.random.default_rng(0)
    features = rng.standard_normal((2, 512, 38, 50), dtype=np.float32)
    n_rois = 256
    x1 = rng.uniform(0, 500, n_rois)
    y1 = rng.uniform(0, 300, n_rois)
    x2 = np.minimum(x1 + rng.uniform(32, 300, n_rois), 790)
    y2 = np.minimum(y1 + rng.uniform(32, 300, n_rois), 600)
    rois = np.stack([np.repeat([0, 1], n_rois // 2), x1, y1, x2, y2], 1).astype(np.float32)
    dout = rng.standard_normal((n_rois, 512, 7, 7), dtype=np.float32)
    try:
        from torchvision.ops import roi_pool as peer_roi_pool

        peer_name = "torchvision roi_pool"
    except ImportError:
        peer_roi_pool, peer_name = _torch_roi_pool, "torch crop + adaptive_max_pool2d"
    ft, rt, dt = _torch_leaf(features), torch.from_numpy(rois), torch.from_numpy(dout)

    def ours():
        return F.roi_pool_forward(features, rois, 7, 1 / 16), F.roi_pool_backward(dout, features, rois, 7, 1 / 16)

    def theirs():
        ft.grad = None
        out = peer_roi_pool(ft, rt, 7, 1 / 16)
        out.backward(dt)
        return out

    pooled, dfeatures = compare_with_peer(ours, theirs, peer_name, repeat=3)
    out = theirs()
    np.testing.assert_array_equal(pooled, out.detach().numpy())
    np.testing.assert_allclose(dfeatures, ft.grad.numpy(), rtol=1e-5, atol=1e-4)
    _report(benchmark)


def _torch_roi_pool(features, rois, size, scale):
    """Pure-PyTorch RoI max pooling for RoIs inside the map: round the corners as torchvision does
    (half away from zero, both end cells included), crop, `adaptive_max_pool2d`."""
    outputs = []
    for b, x1, y1, x2, y2 in rois.tolist():
        sx, sy, ex, ey = (int(np.floor(v * scale + 0.5)) for v in (x1, y1, x2, y2))
        crop = features[int(b), :, sy : ey + 1, sx : ex + 1]
        outputs.append(torch.nn.functional.adaptive_max_pool2d(crop, size))
    return torch.stack(outputs)
