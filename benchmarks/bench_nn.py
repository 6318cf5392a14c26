"""Conv-net kernels: scratchdet's forward + backward against PyTorch CPU, same run, same thread count.

Run: `python -m pytest benchmarks/bench_nn.py -s`. Both libraries get 2 threads
(`torch.set_num_threads(2)`, `numba.set_num_threads(2)`); the inputs are float32 NCHW. Each test times
one forward and one backward (all gradients) and prints ours / torch (the ratio, <= 1 means we are no
slower) and, for convolutions, the GFLOP/s reached: 3 matrix products of 2*N*K*C*kh*kw*H'*W' flops
each (forward, input gradient, filter gradient), to set beside the machine's single-precision GEMM peak.
These count the direct product's flops: layers that take Winograd's algorithm (2.25x fewer
multiply-adds) can pass the peak.

All four shapes run our register-tiled kernels (`scratchdet/kernels/cpu/conv_gemm.py`, no OpenBLAS), the
products of 3x3 layers with at least 32 channels and enough filters by Winograd's F(2x2, 3x3) on the
same tile (`scratchdet/kernels/cpu/winograd.py`); PyTorch runs oneDNN's. OpenBLAS still matters to the rest of a network (linear layers, float64), and
this machine's environment sets OPENBLAS_CORETYPE=Haswell and OPENBLAS_L2_SIZE (for old OpenBLAS
builds); the current NumPy's OpenBLAS would otherwise pick its AVX-512 (SkylakeX) kernels.
`test_conv2d_openblas_settings` therefore measures each shape in subprocesses: with the environment as
set, and with both variables unset for that command alone, and labels every line with the kernel
OpenBLAS reports (`openblas_get_corename`; threadpoolctl, which would report it too, is not installed
here). Tests and CI always keep the variables as set.

`test_conv2d_other_shapes` times layers off the goal's list (small maps, 1x1 and 5x5 filters, one
large image, few filters) the same way, to show where the kernels' choices stand elsewhere;
`test_conv2d_products` also times one image through 512 -> 512 layers (`ONE_IMAGE_SHAPES`), where
preparing the filters weighs as much as the products.

Memory: each call allocates its outputs (and we our padded copies), tens of MB per call on these shapes.
glibc serves such blocks with fresh mmap'd pages, and touching a fresh page costs a page fault, until
it has seen a block of that size freed (its mmap threshold then rises, up to 32 MB). Which calls pay
depends on what the process allocated before, for both libraries alike: measured, the same torch call
took 21 or 35 ms in two processes. `test_conv2d_openblas_settings` therefore also runs each shape with
a warm heap (MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ set high for that command: every block
comes from the heap and stays there), which times the arithmetic alone and repeats to a few percent.

Two timings are printed for the convolutions. "alternating": one call of ours, one of torch, and so on
(the shared `compare_with_peer` helper); each library then starts with its worker threads asleep, or
with the other's still spinning. "back-to-back": each library called several times in a row, as in a
training loop; PyTorch's OpenMP threads stay awake and it is much faster (1.5-2x on these shapes).
The minimum over the calls is reported in both.
"""

import ctypes
import json
import os
import pathlib
import subprocess
import sys
import time

import numba
import numpy as np
import pytest

from scratchdet.nn import functional as F

torch = pytest.importorskip("torch")

THREADS = 2

# (N, C, H, W, K): 3x3 filters, stride 1, padding 1
CONV_SHAPES = [(64, 3, 64, 64, 32), (64, 32, 32, 32, 64), (64, 64, 16, 16, 128), (256, 3, 32, 32, 16)]
OPENBLAS_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def openblas_core():
    """The kernel family NumPy's bundled OpenBLAS runs ('Haswell', 'SkylakeX', ...), or 'unknown'."""
    libs = pathlib.Path(np.__file__).parent.parent / "numpy.libs"
    for lib in sorted(libs.glob("libscipy_openblas*.so*")):
        for symbol in ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename", "openblas_get_corename"):
            function = getattr(ctypes.CDLL(str(lib)), symbol, None)
            if function is not None:
                function.restype = ctypes.c_char_p
                return function().decode()
    return "unknown"


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


def _assert_conv_like_torch(result, xt, wt, bt, dyt, stride, padding):
    """Our layer's (y, (dx, dw, db)) against torch's forward and three gradients of the same layer."""
    y, (dx, dw, db) = result
    xt.grad = wt.grad = bt.grad = None
    yt = torch.nn.functional.conv2d(xt, wt, bt, stride=stride, padding=padding)
    yt.backward(dyt)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(dw, wt.grad.numpy(), rtol=1e-3, atol=1e-2)
    np.testing.assert_allclose(db, bt.grad.numpy(), rtol=1e-3, atol=1e-2)


def _conv_problem(shape):
    n, c, h, w, k = shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, w), dtype=np.float32)
    weight = (rng.standard_normal((k, c, 3, 3), dtype=np.float32) * np.sqrt(2.0 / (c * 9))).astype(np.float32)
    bias = rng.standard_normal(k, dtype=np.float32) * np.float32(0.1)
    dy = rng.standard_normal((n, k, h, w), dtype=np.float32)
    xt, wt, bt, dyt = _torch_leaf(x), _torch_leaf(weight), _torch_leaf(bias), torch.from_numpy(dy)

    def ours():
        y = F.conv2d_forward(x, weight, bias, stride=1, padding=1)
        return y, F.conv2d_backward(dy, x, weight, stride=1, padding=1)

    def theirs():
        xt.grad = wt.grad = bt.grad = None
        torch.nn.functional.conv2d(xt, wt, bt, stride=1, padding=1).backward(dyt)

    def check(result):
        _assert_conv_like_torch(result, xt, wt, bt, dyt, 1, 1)

    return ours, theirs, check, 3 * 2 * n * k * c * 9 * h * w


def _back_to_back(fn, calls=4, rounds=3):
    """The fastest call of fn when it runs `calls` times in a row (after one unmeasured call), `rounds` times."""
    best = float("inf")
    for _ in range(rounds):
        fn()
        for _ in range(calls):
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
    return best


def _conv_label(shape):
    return "x".join(map(str, shape[:4])) + f"-{shape[4]}"


@pytest.mark.parametrize("shape", CONV_SHAPES, ids=_conv_label)
def test_conv2d_forward_backward(compare_with_peer, benchmark, shape):
    """In this process (OpenBLAS variables as set), alternating calls through the shared helper."""
    ours, theirs, check, flops = _conv_problem(shape)
    check(compare_with_peer(ours, theirs, "torch conv2d", repeat=5))
    benchmark.extra_info["openblas_core"] = openblas_core()
    print(f"OpenBLAS kernels: {benchmark.extra_info['openblas_core']} (variables as set), alternating calls")
    _report(benchmark, flops=flops)


def measure_conv(shape):
    """Both timings of one shape in this process; returns a JSON-ready dict (used in a subprocess)."""
    torch.set_num_threads(THREADS)
    numba.set_num_threads(THREADS)
    ours, theirs, check, flops = _conv_problem(shape)
    check(ours())  # warm-up (compiles the kernels) and correctness
    alternating = {"ours": float("inf"), "torch": float("inf")}
    for _ in range(5):
        for name, fn in (("ours", ours), ("torch", theirs)):
            start = time.perf_counter()
            fn()
            alternating[name] = min(alternating[name], time.perf_counter() - start)
    back_to_back = {"ours": _back_to_back(ours), "torch": _back_to_back(theirs)}
    return {"openblas_core": openblas_core(), "flops": flops, "alternating": alternating, "back_to_back": back_to_back}


WARM_HEAP = {"MALLOC_MMAP_THRESHOLD_": str(2**31), "MALLOC_TRIM_THRESHOLD_": str(2**32)}


@pytest.mark.parametrize("setting", ["as set", "unset", "warm heap"])
@pytest.mark.parametrize("shape", CONV_SHAPES, ids=_conv_label)
def test_conv2d_openblas_settings(shape, setting):
    """Each shape in a fresh process: OpenBLAS variables as set here, or both unset for that command alone,
    or as set with a warm heap (no page faults; see the module docstring)."""
    env = dict(os.environ)
    if setting == "unset":
        for name in OPENBLAS_VARIABLES:
            env.pop(name, None)
    if setting == "warm heap":
        env.update(WARM_HEAP)
    repo = pathlib.Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo), env.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, __file__, "conv", json.dumps(shape)], cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    label = ", ".join(f"{name}={os.environ.get(name, '(not set)')}" for name in OPENBLAS_VARIABLES) if setting != "unset" else "both OpenBLAS variables unset"
    if setting == "warm heap":
        label += "; warm heap"
    print(f"\nconv {_conv_label(shape)}, OpenBLAS kernels {measured['openblas_core']} ({label}):")
    for timing in ("alternating", "back_to_back"):
        ours_s, torch_s = measured[timing]["ours"], measured[timing]["torch"]
        print(f"  {timing.replace('_', '-'):13s} ours {ours_s * 1e3:6.1f} ms, torch {torch_s * 1e3:6.1f} ms, ratio ours/torch {ours_s / torch_s:.2f}, "
              f"ours {measured['flops'] / ours_s / 1e9:.0f} GFLOP/s, torch {measured['flops'] / torch_s / 1e9:.0f} GFLOP/s")


# one image through a detector's last layers: the filters' preparation weighs as much as the products
ONE_IMAGE_SHAPES = [(1, 512, 14, 14, 512), (1, 512, 7, 7, 512), (1, 512, 3, 3, 512)]


@pytest.mark.parametrize("shape", CONV_SHAPES + ONE_IMAGE_SHAPES, ids=_conv_label)
def test_conv2d_products(shape):
    """The three products of a layer one by one, back-to-back: forward, input gradient (torch:
    `torch.nn.grad.conv2d_input`), filter and bias gradients (`conv2d_weight` plus dY's sum), to show
    where the time goes, each checked against torch's first. Ours includes the zero-padded copies each
    product makes."""
    n, c, h, w, k = shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, w), dtype=np.float32)
    weight = rng.standard_normal((k, c, 3, 3), dtype=np.float32) * np.float32(np.sqrt(2.0 / (c * 9)))
    bias = np.zeros(k, dtype=np.float32)
    dy = rng.standard_normal((n, k, h, w), dtype=np.float32)
    xt, wt, dyt = torch.from_numpy(x), torch.from_numpy(weight), torch.from_numpy(dy)
    ours = {  # the pieces conv2d_forward / conv2d_backward are made of (for these float32 stride-1 layers)
        "forward": lambda: F.conv2d_forward(x, weight, bias, stride=1, padding=1),
        "input gradient": lambda: F._input_gradient_tiled(dy, x.shape, weight, 1),
        "filter gradient": lambda: F._filter_gradient_tiled(dy, x, weight, 1),
    }
    theirs = {
        "forward": lambda: torch.nn.functional.conv2d(xt, wt, None, padding=1),
        "input gradient": lambda: torch.nn.grad.conv2d_input(xt.shape, wt, dyt, padding=1),
        "filter gradient": lambda: (torch.nn.grad.conv2d_weight(xt, wt.shape, dyt, padding=1), dyt.sum((0, 2, 3))),
    }
    for name in ours:  # the same numbers first
        mine, peer = ours[name](), theirs[name]()
        for a, b in zip(mine if isinstance(mine, tuple) else (mine,), peer if isinstance(peer, tuple) else (peer,)):
            np.testing.assert_allclose(a, b.numpy().reshape(a.shape), rtol=1e-3, atol=1e-2, err_msg=name)
    print(f"\nconv {_conv_label(shape)}, products (back-to-back):")
    for name in ours:
        ours_s, torch_s = _back_to_back(ours[name]), _back_to_back(theirs[name])
        print(f"  {name:15s} ours {ours_s * 1e3:6.2f} ms, torch {torch_s * 1e3:6.2f} ms, ratio {ours_s / torch_s:.2f}")


# (N, C, H, W, K, kernel, padding): small maps as after 2-4 poolings, 1x1 and 5x5 filters, detector-sized
# single images, few filters on wide and narrow maps
OTHER_SHAPES = [
    (128, 64, 8, 8, 128, 3, 1), (128, 128, 4, 4, 128, 3, 1), (64, 128, 7, 7, 100, 3, 1), (32, 64, 13, 13, 192, 3, 1),
    (64, 256, 14, 14, 64, 1, 0), (16, 32, 56, 56, 32, 5, 2), (128, 20, 12, 12, 50, 5, 0), (1, 64, 150, 250, 64, 3, 1),
    (1, 256, 38, 63, 512, 3, 1), (8, 16, 45, 61, 24, 3, 1), (256, 32, 8, 8, 32, 3, 0), (64, 64, 28, 28, 32, 3, 1),
]


@pytest.mark.parametrize("shape", OTHER_SHAPES, ids=lambda s: "x".join(map(str, s[:4])) + f"-{s[4]}-k{s[5]}p{s[6]}")
def test_conv2d_other_shapes(shape):
    """Forward + backward of layers off the goal's list, back-to-back, in this process, checked against torch."""
    n, c, h, w, k, size, padding = shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, w), dtype=np.float32)
    weight = rng.standard_normal((k, c, size, size), dtype=np.float32) * np.float32(np.sqrt(2.0 / (c * size * size)))
    bias = rng.standard_normal(k, dtype=np.float32) * np.float32(0.1)
    dy = rng.standard_normal((n, k, h + 2 * padding - size + 1, w + 2 * padding - size + 1), dtype=np.float32)
    xt, wt, bt, dyt = _torch_leaf(x), _torch_leaf(weight), _torch_leaf(bias), torch.from_numpy(dy)

    def ours():
        return F.conv2d_forward(x, weight, bias, stride=1, padding=padding), F.conv2d_backward(dy, x, weight, stride=1, padding=padding)

    def theirs():
        xt.grad = wt.grad = bt.grad = None
        torch.nn.functional.conv2d(xt, wt, bt, padding=padding).backward(dyt)

    _assert_conv_like_torch(ours(), xt, wt, bt, dyt, 1, padding)
    ours_s, torch_s = _back_to_back(ours), _back_to_back(theirs)
    flops = 3 * 2 * n * k * c * size * size * dy.shape[2] * dy.shape[3]
    print(f"\nconv {n}x{c}x{h}x{w}-{k} {size}x{size} pad {padding}: ours {ours_s * 1e3:.2f} ms, torch {torch_s * 1e3:.2f} ms, "
          f"ratio {ours_s / torch_s:.2f}, ours {flops / ours_s / 1e9:.0f} GFLOP/s, torch {flops / torch_s / 1e9:.0f} GFLOP/s")


# (N, C, H, W, K, kernel, stride, padding): strided layers, a detector backbone's first (7x7, stride 2)
# and downsampling 3x3 layers
STRIDED_SHAPES = [
    (8, 3, 224, 224, 64, 7, 2, 3), (16, 3, 128, 128, 32, 3, 2, 1), (64, 32, 32, 32, 64, 3, 2, 1),
    (32, 64, 32, 32, 128, 3, 2, 1), (2, 256, 28, 28, 512, 3, 2, 1), (16, 32, 33, 33, 48, 5, 3, 2),
]


@pytest.mark.parametrize("shape", STRIDED_SHAPES, ids=lambda s: "x".join(map(str, s[:4])) + f"-{s[4]}-k{s[5]}s{s[6]}p{s[7]}")
def test_conv2d_strided(shape, monkeypatch):
    """Forward + backward of strided layers, back-to-back, checked against torch: float32 runs them as
    stride-1 convolutions of the input's phases (`F._by_phases`); the im2col route's time is printed too."""
    n, c, h, w, k, size, stride, padding = shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, w), dtype=np.float32)
    weight = rng.standard_normal((k, c, size, size), dtype=np.float32) * np.float32(np.sqrt(2.0 / (c * size * size)))
    bias = rng.standard_normal(k, dtype=np.float32) * np.float32(0.1)
    out = (F.conv2d_output_size(h, size, stride, padding), F.conv2d_output_size(w, size, stride, padding))
    dy = rng.standard_normal((n, k, *out), dtype=np.float32)
    xt, wt, bt, dyt = _torch_leaf(x), _torch_leaf(weight), _torch_leaf(bias), torch.from_numpy(dy)

    def ours():
        return F.conv2d_forward(x, weight, bias, stride, padding), F.conv2d_backward(dy, x, weight, stride, padding)

    def theirs():
        xt.grad = wt.grad = bt.grad = None
        torch.nn.functional.conv2d(xt, wt, bt, stride=stride, padding=padding).backward(dyt)

    _assert_conv_like_torch(ours(), xt, wt, bt, dyt, stride, padding)
    ours_s, torch_s = _back_to_back(ours), _back_to_back(theirs)
    monkeypatch.setattr(F, "_by_phases", lambda *args: False)
    im2col_s = _back_to_back(ours)
    print(f"\nconv {'x'.join(map(str, shape[:4]))}-{k} {size}x{size} stride {stride} pad {padding}: ours {ours_s * 1e3:.2f} ms "
          f"(im2col route {im2col_s * 1e3:.2f} ms), torch {torch_s * 1e3:.2f} ms, ratio {ours_s / torch_s:.2f}")


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

    y, dx = compare_with_peer(ours, theirs, "torch max_pool2d", repeat=5)
    xt.grad = None
    yt = torch.nn.functional.max_pool2d(xt, 2, 2)
    yt.backward(dyt)
    np.testing.assert_array_equal(y, yt.detach().numpy())  # a maximum is one of the inputs: exactly
    np.testing.assert_array_equal(dx, xt.grad.numpy())
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

    y, (dx, dw, db) = compare_with_peer(ours, theirs, "torch linear", repeat=5)
    xt.grad = wt.grad = bt.grad = None
    yt = torch.nn.functional.linear(xt, wt, bt)
    yt.backward(dyt)
    for name, a, b in (("y", y, yt), ("dx", dx, xt.grad), ("dw", dw, wt.grad), ("db", db, bt.grad)):
        np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-3, atol=1e-3, err_msg=name)
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


TRAIN_BATCH = 64


def test_training_step(compare_with_peer, benchmark):
    """One SGD step (forward, cross-entropy, backward, update) of bench_cuda.py's `_small_net` (3 x
    (conv 3x3, ReLU, max pool 2), then linear to 10 classes) on 64 32x32 images,
    against the same net in PyTorch from the same weights. Neither computes the images' gradient
    (ours: `backward(..., input_grad=False)`; PyTorch: the input does not require grad); ours with
    the images' gradient is printed too. Both first steps give the same loss (checked)."""
    from bench_cuda import TRAIN_IMAGE, _small_net, _torch_training_step, _torch_twin

    from scratchdet import nn

    rng = np.random.default_rng(0)
    x = rng.standard_normal((TRAIN_BATCH, 3, TRAIN_IMAGE, TRAIN_IMAGE), dtype=np.float32)
    labels = rng.integers(0, 10, TRAIN_BATCH)
    model = _small_net(nn)
    optimizer = nn.SGD(model, lr=0.01, momentum=0.9, weight_decay=5e-4)
    theirs = _torch_training_step(_torch_twin(model), torch.from_numpy(x), torch.from_numpy(labels))  # same weights

    def step(input_grad):
        loss, dscores = nn.softmax_cross_entropy(model.forward(x), labels)
        model.backward(dscores, input_grad=input_grad)
        optimizer.step()
        return loss

    first_ours, first_theirs = step(False), theirs()
    assert abs(first_ours - first_theirs) <= 1e-5 * abs(first_theirs)
    compare_with_peer(lambda: step(False), theirs, "torch training step", repeat=5)
    _report(benchmark)
    with_input_grad = _back_to_back(lambda: step(True))
    ours_s, torch_s = _back_to_back(lambda: step(False)), _back_to_back(theirs)
    print(f"back-to-back: ours {ours_s * 1e3:.1f} ms (with the images' gradient {with_input_grad * 1e3:.1f} ms), "
          f"torch {torch_s * 1e3:.1f} ms, ratio {ours_s / torch_s:.2f}")


def _torch_roi_pool(features, rois, size, scale):
    """Pure-PyTorch RoI max pooling for RoIs inside the map: round the corners as torchvision does
    (half away from zero, both end cells included), crop, `adaptive_max_pool2d`."""
    outputs = []
    for b, x1, y1, x2, y2 in rois.tolist():
        sx, sy, ex, ey = (int(np.floor(v * scale + 0.5)) for v in (x1, y1, x2, y2))
        crop = features[int(b), :, sy : ey + 1, sx : ex + 1]
        outputs.append(torch.nn.functional.adaptive_max_pool2d(crop, size))
    return torch.stack(outputs)


if __name__ == "__main__":  # the subprocess of test_conv2d_openblas_settings: python bench_nn.py conv "[N, C, H, W, K]"
    if len(sys.argv) == 3 and sys.argv[1] == "conv":
        print(json.dumps(measure_conv(tuple(json.loads(sys.argv[2])))))
    else:
        sys.exit('usage: python benchmarks/bench_nn.py conv "[N, C, H, W, K]"')
