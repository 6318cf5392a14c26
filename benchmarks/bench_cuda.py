"""The CUDA backend against PyTorch on the same GPU, same run: convolution (cuDNN), a training step of
a small conv net, a linear layer (cuBLAS), NMS and per-class NMS (torchvision); and Fast R-CNN's
training step and detection on the GPU against scratchdet's own on the CPU.

Run on a machine with an NVIDIA GPU and PyTorch built with CUDA:

    python -m pytest benchmarks/bench_cuda.py -s          # pytest-benchmark, ratios printed
    python benchmarks/bench_cuda.py --out results.md       # one markdown table (benchmarks/gpu_run.sh)

Every timing is the best of a few calls, each between two device synchronisations (so it counts the
whole GPU work and the Python launch overhead: the wall time a user waits), after warm-up calls that compile the Numba kernels
and let cuDNN pick its algorithms (`cudnn.benchmark = True`). PyTorch runs in strict float32
(`allow_tf32 = False`), the arithmetic scratchdet's kernels do; the conv table also gives cuDNN's
time with TF32 tensor cores (PyTorch's default for convolutions) for reference. Inputs are float32
NCHW; each case checks that both libraries computed the same thing. The convolutions and the linear
layer also get each side's *device* time (`device_time`): the GPU's own time per call, without the
host's share, which for a small layer is most of the wall time.
"""

import argparse
import datetime
import statistics
import sys
import time

import numpy as np
import pytest

# (N, C, H, W, K): 3x3 filters, stride 1, padding 1; the conv issue's shapes at batch 256
CONV_SHAPES = [(256, 3, 64, 64, 32), (256, 32, 32, 32, 64), (256, 64, 16, 16, 128), (256, 3, 32, 32, 16)]
# (number of objects the boxes cluster around, IoU threshold): few or many boxes kept
NMS_SCENARIOS = {"few_kept": (50, 0.5), "most_kept": (5000, 0.7)}
NMS_CLASSES = 20  # the per-class NMS case: boxes labelled at random among this many classes
N_BOXES = 10_000
TRAIN_BATCH = 256
TRAIN_IMAGE = 32  # images are TRAIN_IMAGE x TRAIN_IMAGE, 3 channels
TRAIN_CHANNELS = (32, 64, 128)  # the filters of the training net's three conv layers
LINEAR_SHAPE = (256, 4096, 1024)  # (batch, inputs, outputs)
# the Fast R-CNN case: 2 images of DET_IMAGE x DET_IMAGE per step, DET_ROIS RoIs each, sampled from
# DET_PROPOSALS random proposals; the network of `scratchdet demo` (FastRCNN's defaults)
DET_IMAGE = 256
DET_ROIS = 64
DET_PROPOSALS = 2000
DET_NETWORK = {}  # FastRCNN keyword arguments (none: its defaults)


# ---------------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------------


def _synchronize():
    """Wait for the GPU: Numba's work, and PyTorch's once PyTorch has started CUDA (gpu_profile.py times
    scratchdet alone, without PyTorch)."""
    from numba import cuda

    cuda.synchronize()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def gpu_time(fn, repeat=5, warmup=2):
    """Best and median of `repeat` timed calls of `fn()` in seconds, each between two device syncs."""
    for _ in range(warmup):
        fn()
    _synchronize()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        _synchronize()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


SLEEP_US = 50_000  # how long `device_time` holds the GPU while the host queues the calls


def _sleeper():
    from numba import cuda

    @cuda.jit
    def sleep(microseconds):
        """One thread sleeps about `microseconds` us, holding the default stream."""
        for _ in range(microseconds):
            cuda.nanosleep(1000)

    return sleep


_SLEEPERS = []


def queued_time(fn, calls=5):
    """``(host s, device s, in_time)`` per call of `fn`: the GPU is first held by a sleeping kernel
    (SLEEP_US), the host queues `calls` calls behind it (host: the wall time of queuing them), and
    CUDA events recorded before and after them time the calls as the GPU runs them back to back
    (device). PyTorch and Numba share the default stream, so both libraries can be timed so.
    `in_time` is False when the sleeper ended before every call was queued (`fn` waited for the
    device, e.g. to read a loss): the device time then includes the host's gaps. After one warm-up call."""
    from numba import cuda

    if not _SLEEPERS:
        _SLEEPERS.append(_sleeper())
    fn()  # warm-up: compilation, autotuning, work buffers
    _synchronize()
    start, end = cuda.event(), cuda.event()
    _SLEEPERS[0][1, 1](SLEEP_US)
    start.record()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    host = (time.perf_counter() - t0) / calls
    in_time = not start.query()  # the sleeper still held the GPU: no call ran before all were queued
    end.record()
    end.synchronize()
    return host, start.elapsed_time(end) / 1e3 / calls, in_time


def device_time(fn, calls=5):
    """The GPU's own time per call of `fn` in seconds, without the host's (`queued_time`); None in the
    simulator, or when `fn` waited for the device."""
    from scratchdet.backend import simulated

    if simulated():
        return None
    _, device, in_time = queued_time(fn, calls)
    return device if in_time else None


def _device_fields(ours, theirs):
    """The device-time entries of a result: ours, the peer's (ms) and their ratio, None where not measured."""
    ours_s, theirs_s = device_time(ours), device_time(theirs)
    both = ours_s is not None and theirs_s is not None
    return {
        "ours_device_ms": None if ours_s is None else ours_s * 1e3,
        "peer_device_ms": None if theirs_s is None else theirs_s * 1e3,
        "device_ratio": ours_s / theirs_s if both else None,
    }


def _gpu_available():
    try:
        import torch
        from numba import cuda

        from scratchdet.backend import simulated

        return not simulated() and cuda.is_available() and torch.cuda.is_available()
    except Exception:  # no torch, no driver
        return False


def _torch_fp32(torch, tf32=False):
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = False


# ---------------------------------------------------------------------------------------------------
# cases: each returns a dict of numbers for the table
# ---------------------------------------------------------------------------------------------------


def conv_case(shape, repeat=5):
    """conv2d forward + backward (dx, dw, db) at 3x3, padding 1: ours against cuDNN (FP32 and TF32)."""
    import torch

    from scratchdet.backend import to_device, to_host
    from scratchdet.nn import functional as F

    n, c, h, w, k = shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, w), dtype=np.float32)
    weight = (rng.standard_normal((k, c, 3, 3), dtype=np.float32) * np.sqrt(2.0 / (c * 9))).astype(np.float32)
    bias = rng.standard_normal(k, dtype=np.float32) * 0.1
    dy = rng.standard_normal((n, k, h, w), dtype=np.float32)
    xd, wd, bd, dyd = (to_device(a, "cuda") for a in (x, weight, bias, dy))

    def ours():
        y = F.conv2d_forward(xd, wd, bd, stride=1, padding=1)
        return y, F.conv2d_backward(dyd, xd, wd, stride=1, padding=1)

    xt, wt, bt = (torch.from_numpy(a).cuda().requires_grad_(True) for a in (x, weight, bias))
    dyt = torch.from_numpy(dy).cuda()

    def theirs():
        xt.grad = wt.grad = bt.grad = None
        y = torch.nn.functional.conv2d(xt, wt, bt, stride=1, padding=1)
        y.backward(dyt)
        return y

    start = time.perf_counter()
    y, (dx, dw, db) = ours()
    _synchronize()
    first_call = time.perf_counter() - start
    _torch_fp32(torch, tf32=False)
    ours_best, ours_median = gpu_time(ours, repeat)
    torch_best, _ = gpu_time(theirs, repeat)
    device = _device_fields(ours, theirs)
    _torch_fp32(torch, tf32=True)
    tf32_best, _ = gpu_time(theirs, repeat)
    _torch_fp32(torch, tf32=False)
    # the same numbers as PyTorch (float32 sums in another order)
    yt = theirs()
    errors = {
        "y": float(np.abs(to_host(y) - yt.detach().cpu().numpy()).max()),
        "dx": float(np.abs(to_host(dx) - xt.grad.cpu().numpy()).max()),
        "dw": float(np.abs(to_host(dw) - wt.grad.cpu().numpy()).max() / max(1.0, np.abs(to_host(dw)).max())),
        "db": float(np.abs(to_host(db) - bt.grad.cpu().numpy()).max() / max(1.0, np.abs(to_host(db)).max())),
    }
    flops = 3 * 2 * n * k * c * 9 * h * w  # forward, input gradient, filter gradient
    return {
        "case": "conv2d fwd+bwd " + "x".join(map(str, shape[:4])) + f"->{k}",
        "ours_ms": ours_best * 1e3,
        "ours_median_ms": ours_median * 1e3,
        "peer": "cuDNN FP32",
        "peer_ms": torch_best * 1e3,
        "ratio": ours_best / torch_best,
        "tf32_ms": tf32_best * 1e3,
        "ours_tflops": flops / ours_best / 1e12,
        "peer_tflops": flops / torch_best / 1e12,
        "first_call_s": first_call,
        "max_error": max(errors.values()),
        **device,
    }


def conv_breakdown(shape, repeat=5):
    """Where the time of one conv2d forward + backward goes: each stage timed on its own (ms)."""
    from scratchdet.backend import to_device
    from scratchdet.kernels.cuda import conv_gemm, reduce
    from scratchdet.kernels.cuda import nn as cuda_nn
    from scratchdet.kernels.cuda.common import empty, launch_1d

    n, c, h, w, k = shape
    rows, plane = c * 9, h * w
    geometry = (3, 3, 1, 1, w)  # 3x3, stride 1, padding 1: H' = H, W' = W
    rng = np.random.default_rng(0)
    x = to_device(rng.standard_normal((n, c, h, w), dtype=np.float32), "cuda")
    weight = to_device(rng.standard_normal((k, c, 3, 3), dtype=np.float32), "cuda")
    bias = to_device(np.zeros(k, np.float32), "cuda")
    dy = to_device(rng.standard_normal((n, k, h, w), dtype=np.float32), "cuda")
    y = empty((n, k, h, w), np.float32)
    dx = empty((n, c, h, w), np.float32)
    splits = conv_gemm.reduction_splits(n, k, rows + 1, plane)  # as conv2d_backward cuts the sums
    grads_per_image = empty((n * splits, k * rows + k), np.float32)
    w_swapped = empty((c, k, 3, 3), np.float32)
    stages = {
        # what the allocator costs (dropped at once: Numba's pending frees, or back to the caching allocator)
        f"allocate y ({n * k * plane * 4 / 1e6:.0f} MB)": lambda: empty((n, k, h, w), np.float32),
        "forward: implicit GEMM y = W cols + b": lambda: conv_gemm.conv_gemm_launch(
            conv_gemm.FORWARD, weight, x, y, k, plane, rows, (0, rows), (k * plane, plane), geometry, bias=bias),
        f"dW and db per image in {splits} part(s): implicit GEMM dY [cols^T | 1]": lambda: conv_gemm.conv_gemm_launch(
            conv_gemm.FILTER_GRAD, dy, x, grads_per_image, k, rows, plane, (k * plane, plane), (k * rows + k, rows),
            geometry, splits=splits),
        "sum of dW and db over images (and parts)": lambda: reduce.sum_axis0(grads_per_image),
    }
    if c <= cuda_nn.FEW_CHANNELS:  # what conv2d_backward runs for an RGB layer
        stages["dx: a thread per column piece, all channels (<= 4 channels)"] = lambda: cuda_nn.input_grad_few_channels(
            dy, weight, 1, 1, dx)
    else:
        stages["swap filter axes"] = lambda: cuda_nn.swap_filter_axes_kernel[launch_1d(k * rows)](weight, w_swapped)
        stages["dx: implicit GEMM W~ dcols"] = lambda: conv_gemm.conv_gemm_launch(
            conv_gemm.INPUT_GRAD, w_swapped, dy, dx, c, plane, k * 9, (0, k * 9), (c * plane, plane), geometry)
    stages |= {
        "whole forward": lambda: cuda_nn.conv2d_forward(x, weight, bias, 1, 1),
        "whole backward": lambda: cuda_nn.conv2d_backward(dy, x, weight, 1, 1),
    }
    return {name: gpu_time(fn, repeat)[0] * 1e3 for name, fn in stages.items()}


def train_breakdown(repeat=5):
    """Where the time of `train_step_case`'s step goes: each layer's forward and backward, the loss
    and the SGD update, each timed on its own (ms)."""
    from scratchdet import nn
    from scratchdet.backend import to_device

    rng = np.random.default_rng(0)
    x = rng.standard_normal((TRAIN_BATCH, 3, TRAIN_IMAGE, TRAIN_IMAGE), dtype=np.float32)
    labels = to_device(rng.integers(0, 10, TRAIN_BATCH), "cuda")
    model = _small_net(nn).to("cuda")
    optimizer = nn.SGD(model, lr=0.01, momentum=0.9, weight_decay=5e-4)
    inputs = [to_device(x, "cuda")]
    for layer in model.layers:  # one forward, keeping every layer's input (and its saved state)
        inputs.append(layer.forward(inputs[-1]))
    _, dscores = nn.softmax_cross_entropy(inputs[-1], labels)
    grads = [dscores]
    for i, layer in reversed(list(enumerate(model.layers))):
        grads.append(layer.backward(grads[-1], input_grad=i > 0))
    grads = grads[::-1]  # grads[i] is the gradient with respect to inputs[i]
    stages = {}
    for i, layer in enumerate(model.layers):
        name = f"{i}. {type(layer).__name__} {'x'.join(map(str, inputs[i].shape))}"
        stages[f"{name} forward"] = lambda layer=layer, i=i: layer.forward(inputs[i])
    stages["loss: softmax cross-entropy"] = lambda: nn.softmax_cross_entropy(inputs[-1], labels)
    for i, layer in reversed(list(enumerate(model.layers))):
        name = f"{i}. {type(layer).__name__}"
        # (a layer's backward reads what its forward saved: the same input every time here)
        stages[f"{name} backward"] = lambda layer=layer, i=i: layer.backward(grads[i + 1], input_grad=i > 0)
    stages["SGD step (momentum, weight decay)"] = optimizer.step
    return {name: gpu_time(fn, repeat)[0] * 1e3 for name, fn in stages.items()}


def linear_case(repeat=5):
    """A fully connected layer 256 x 4096 -> 1024, forward + backward: our tiled GEMM against cuBLAS."""
    import torch

    from scratchdet.backend import to_device, to_host
    from scratchdet.nn import functional as F

    n, d_in, d_out = LINEAR_SHAPE
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d_in), dtype=np.float32)
    weight = rng.standard_normal((d_out, d_in), dtype=np.float32) * 0.01
    bias = np.zeros(d_out, dtype=np.float32)
    dy = rng.standard_normal((n, d_out), dtype=np.float32)
    xd, wd, bd, dyd = (to_device(a, "cuda") for a in (x, weight, bias, dy))

    def ours():
        return F.linear_forward(xd, wd, bd), F.linear_backward(dyd, xd, wd)

    xt, wt, bt = (torch.from_numpy(a).cuda().requires_grad_(True) for a in (x, weight, bias))
    dyt = torch.from_numpy(dy).cuda()

    def theirs():
        xt.grad = wt.grad = bt.grad = None
        torch.nn.functional.linear(xt, wt, bt).backward(dyt)

    _torch_fp32(torch)
    y, (dx, dw, db) = ours()
    ours_best, ours_median = gpu_time(ours, repeat)
    torch_best, _ = gpu_time(theirs, repeat)
    device = _device_fields(ours, theirs)
    theirs()
    error = float(np.abs(to_host(dw) - wt.grad.cpu().numpy()).max())
    flops = 3 * 2 * n * d_in * d_out
    return {
        "case": f"linear fwd+bwd {n}x{d_in}->{d_out}",
        "ours_ms": ours_best * 1e3,
        "ours_median_ms": ours_median * 1e3,
        "peer": "cuBLAS FP32",
        "peer_ms": torch_best * 1e3,
        "ratio": ours_best / torch_best,
        "ours_tflops": flops / ours_best / 1e12,
        "peer_tflops": flops / torch_best / 1e12,
        "max_error": error,
        **device,
    }


def detector_case(repeat=5):
    """A Fast R-CNN training step (2 images, 2 x DET_ROIS RoIs, SGD) and a detection (`predict` over
    DET_PROPOSALS proposals) on the GPU against the same on the CPU: how much the GPU buys a detector.
    No PyTorch peer (torchvision has no Fast R-CNN of this shape); the CPU side is scratchdet on every
    core Numba is given. Both start from the same weights and take the same first step."""
    import numba

    from scratchdet import nn
    from scratchdet.data.shapes import shapes_dataset
    from scratchdet.models import FastRCNN
    from scratchdet.train import roi_batches

    data = shapes_dataset(2, image_size=(DET_IMAGE, DET_IMAGE), objects=(1, 2), size=(max(4, DET_IMAGE // 8), DET_IMAGE // 3), seed=0)
    rng = np.random.default_rng(0)

    def proposals():
        corners = rng.uniform(0, DET_IMAGE, (DET_PROPOSALS, 2, 2))
        boxes = np.sort(corners, axis=1).reshape(DET_PROPOSALS, 4)  # (min x, min y, max x, max y): xyxy
        return boxes[(boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)]

    props = [proposals() for _ in data.images]
    batch = roi_batches(data.images, data.boxes, data.labels, props, rois_per_image=DET_ROIS, seed=0)(0)
    models = {device: FastRCNN(data.classes, rng=0, **DET_NETWORK).to(device) for device in ("cuda", "cpu")}
    optimizers = {device: nn.SGD(model, lr=0.001, momentum=0.9) for device, model in models.items()}

    def step(device):
        losses = models[device].training_step(batch)
        optimizers[device].step()
        return losses["total"]

    first = {device: step(device) for device in models}
    ours_best, ours_median = gpu_time(lambda: step("cuda"), repeat)
    cpu_best, _ = gpu_time(lambda: step("cpu"), repeat)
    for model in models.values():
        model.eval()
    image, image_props = data.images[0], props[0]
    detect_best, detect_median = gpu_time(lambda: models["cuda"].predict(image, image_props), repeat)
    detect_cpu, _ = gpu_time(lambda: models["cpu"].predict(image, image_props), repeat)
    peer = f"scratchdet on the CPU ({numba.get_num_threads()} threads)"
    rois = len(batch.rois)
    return [
        {
            "case": f"Fast R-CNN training step, 2 images {DET_IMAGE}x{DET_IMAGE}, {rois} RoIs, SGD",
            "ours_ms": ours_best * 1e3, "ours_median_ms": ours_median * 1e3,
            "peer": peer, "peer_ms": cpu_best * 1e3, "ratio": ours_best / cpu_best,
            "max_error": abs(first["cuda"] - first["cpu"]),
        },
        {
            "case": f"Fast R-CNN detection, 1 image {DET_IMAGE}x{DET_IMAGE}, {len(image_props)} proposals",
            "ours_ms": detect_best * 1e3, "ours_median_ms": detect_median * 1e3,
            "peer": peer, "peer_ms": detect_cpu * 1e3, "ratio": detect_best / detect_cpu,
        },
    ]


def _small_net(module, seed=0):
    """3 x (conv 3x3 with TRAIN_CHANNELS filters, ReLU, max pool 2), flatten, linear to 10 classes, in
    scratchdet (`module` = scratchdet.nn, layer i seeded with seed + i) or PyTorch (`module` = torch.nn)."""

    def rng(i):
        return {} if module.__name__.startswith("torch") else {"rng": seed + i}

    layers, channels = [], 3
    for i, filters in enumerate(TRAIN_CHANNELS):
        layers += [module.Conv2d(channels, filters, 3, padding=1, **rng(i)), module.ReLU(), module.MaxPool2d(2)]
        channels = filters
    layers += [module.Flatten(), module.Linear(channels * (TRAIN_IMAGE // 8) ** 2, 10, **rng(len(TRAIN_CHANNELS)))]
    return module.Sequential(*layers)


def _torch_twin(model):
    """`_small_net(torch.nn)` holding the weights of `model`, a `_small_net(scratchdet.nn)` on the host."""
    import torch

    twin = _small_net(torch.nn)
    with torch.no_grad():
        torch_layers = [m for m in twin if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        for layer, torch_layer in zip([layer for layer in model.layers if layer.has_params()], torch_layers):
            torch_layer.weight.copy_(torch.from_numpy(layer.params["weight"]))
            torch_layer.bias.copy_(torch.from_numpy(layer.params["bias"]))
    return twin


def _torch_training_step(model, x, labels):
    """One PyTorch SGD step of `model` on (x, labels) as a function returning the loss (`loss.item()`),
    with the optimiser settings of ours in these benchmarks."""
    import torch

    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), labels)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def train_step_case(repeat=5):
    """One SGD step (forward, cross-entropy, backward, update) of a 3-conv net on 256 32x32 images.

    The PyTorch net starts from the same weights; its step ends with `loss.item()`, as ours returns
    the loss as a float. Neither computes the images' gradient (ours: `input_grad=False`; in runs 1
    and 2 ours still did).
    """
    import torch

    from scratchdet import nn
    from scratchdet.backend import to_device

    rng = np.random.default_rng(0)
    x = rng.standard_normal((TRAIN_BATCH, 3, TRAIN_IMAGE, TRAIN_IMAGE), dtype=np.float32)
    labels = rng.integers(0, 10, TRAIN_BATCH)
    model = _small_net(nn).to("cuda")
    optimizer = nn.SGD(model, lr=0.01, momentum=0.9, weight_decay=5e-4)
    xd, labels_d = to_device(x, "cuda"), to_device(labels, "cuda")

    def ours():
        scores = model.forward(xd)
        loss, dscores = nn.softmax_cross_entropy(scores, labels_d)
        model.backward(dscores, input_grad=False)  # as PyTorch: the images need no gradient
        optimizer.step()
        return loss

    theirs = _torch_training_step(  # from the same initial weights
        _torch_twin(_small_net(nn)).cuda(), torch.from_numpy(x).cuda(), torch.from_numpy(labels).cuda()
    )

    _torch_fp32(torch)
    # the first step of each, from the same weights, gives the same loss
    start = time.perf_counter()
    first_ours = ours()
    first_call = time.perf_counter() - start
    first_theirs = theirs()
    ours_best, ours_median = gpu_time(ours, repeat)
    torch_best, _ = gpu_time(theirs, repeat)
    return {
        "case": f"training step, 3 conv + 1 fc, {TRAIN_BATCH}x3x{TRAIN_IMAGE}x{TRAIN_IMAGE}",
        "ours_ms": ours_best * 1e3,
        "ours_median_ms": ours_median * 1e3,
        "peer": "PyTorch (cuDNN FP32)",
        "peer_ms": torch_best * 1e3,
        "ratio": ours_best / torch_best,
        "first_call_s": first_call,
        "max_error": abs(first_ours - first_theirs),
    }


def clustered_boxes(rng, n, n_objects, image_size=1000.0):
    """(n, 4) float32 xyxy boxes jittered around `n_objects` objects (a detector's raw output), and scores."""
    centres = rng.uniform(0, image_size, (n_objects, 2))
    sizes = np.exp(rng.uniform(np.log(16), np.log(400), (n_objects, 1))) * np.exp(rng.normal(0, 0.3, (n_objects, 2)))
    obj = rng.integers(0, n_objects, n)
    centre = centres[obj] + rng.normal(0, 0.15, (n, 2)) * sizes[obj]
    size = sizes[obj] * np.exp(rng.normal(0, 0.15, (n, 2)))
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1).astype(np.float32)
    return boxes, rng.uniform(0, 1, n).astype(np.float32)


def nms_case(scenario, repeat=10, classes=0):
    """Greedy NMS of 10,000 boxes on the GPU: our bitmask NMS against torchvision.ops.nms; with
    `classes`, per-class NMS of boxes labelled at random among that many classes (batched_nms against
    torchvision.ops.batched_nms, which shifts each class's coordinates by an offset)."""
    import torch
    import torchvision

    from scratchdet import boxes as B
    from scratchdet.backend import to_device, to_host

    n_objects, threshold = NMS_SCENARIOS[scenario]
    rng = np.random.default_rng(0)
    boxes, scores = clustered_boxes(rng, N_BOXES, n_objects)
    labels = rng.integers(0, max(classes, 1), N_BOXES)
    boxes_d, scores_d, labels_d = to_device(boxes, "cuda"), to_device(scores, "cuda"), to_device(labels, "cuda")
    boxes_t, scores_t, labels_t = (torch.from_numpy(a).cuda() for a in (boxes, scores, labels))

    if classes:
        def ours():
            return B.batched_nms(boxes_d, scores_d, labels_d, threshold)

        def theirs():
            return torchvision.ops.batched_nms(boxes_t, scores_t, labels_t, threshold)

        keep_cpu = B.batched_nms(boxes, scores, labels, threshold)
    else:
        def ours():
            return B.nms(boxes_d, scores_d, threshold)

        def theirs():
            return torchvision.ops.nms(boxes_t, scores_t, threshold)

        keep_cpu = B.nms(boxes, scores, threshold)
    keep = to_host(ours())
    keep_t = theirs().cpu().numpy()
    ours_best, ours_median = gpu_time(ours, repeat)
    torch_best, _ = gpu_time(theirs, repeat)
    kind = f"per-class NMS ({classes} classes)" if classes else "NMS"
    return {
        "case": f"{kind} {N_BOXES} boxes, {scenario} (IoU {threshold}, {len(keep)} kept)",
        "ours_ms": ours_best * 1e3,
        "ours_median_ms": ours_median * 1e3,
        "peer": "torchvision.ops." + ("batched_nms" if classes else "nms"),
        "peer_ms": torch_best * 1e3,
        "ratio": ours_best / torch_best,
        "same_as_cpu": bool(np.array_equal(keep, keep_cpu)),
        # torchvision computes IoU in float32, we in float64: boxes within rounding of the threshold may differ
        "differs_from_peer": int(len(np.setxor1d(keep, keep_t))),
    }


def nms_breakdown(scenario, repeat=10):
    """Where the time of one NMS of 10,000 boxes goes: each kernel timed on its own (ms).

    The same launches as `kernels.cuda.boxes.nms`, on buffers of their own; the rank sort also
    gathers the boxes in score order (one kernel), and the whole call adds the host work, the
    allocation of the result and the 8-byte copy of the kept count.
    """
    import math

    from numba import cuda

    from scratchdet import boxes as B
    from scratchdet.backend import to_device
    from scratchdet.kernels.cuda import boxes as K

    n_objects, threshold = NMS_SCENARIOS[scenario]
    boxes, scores = clustered_boxes(np.random.default_rng(0), N_BOXES, n_objects)
    boxes_d, scores_d = to_device(boxes, "cuda"), to_device(scores, "cuda")
    n, words = N_BOXES, math.ceil(N_BOXES / K.WORD)
    order = cuda.device_array(n, np.int64)
    sorted_boxes = cuda.device_array((n, 4), np.float64)
    mask = cuda.device_array((n, words), np.uint64)
    removed = cuda.device_array(words, np.uint64)
    keep = cuda.device_array(n, np.int64)
    n_keep = cuda.device_array(1, np.int64)
    no_groups = cuda.device_array(1, np.int64)  # plain NMS: one group, the table is not read

    def sort():
        K.rank_sort_kernel[math.ceil(n / K.SORT_BOXES), K.sort_threads(n)](scores_d, boxes_d, order, sorted_boxes)

    def suppression_mask():
        K.nms_mask_kernel[words * (words + 1) // 2, K.WORD](sorted_boxes, threshold, no_groups, False, mask)

    def scan():
        K.nms_scan_kernel[1, K.scan_threads(words)](mask, order, removed, keep, n_keep)

    sort()
    suppression_mask()  # the scan reads the mask and the order of these
    stages = {
        f"rank sort + gather ({math.ceil(n / K.SORT_BOXES)} blocks of {K.sort_threads(n)})": sort,
        f"suppression mask ({words * (words + 1) // 2} blocks of {K.WORD})": suppression_mask,
        f"greedy scan (1 block of {K.scan_threads(words)})": scan,
        "kept-count copy (8 bytes to the host)": lambda: n_keep.copy_to_host(),
        "whole nms call": lambda: B.nms(boxes_d, scores_d, threshold),
    }
    return {name: gpu_time(fn, repeat)[0] * 1e3 for name, fn in stages.items()}


# ---------------------------------------------------------------------------------------------------
# pytest-benchmark entry points (skipped without a GPU)
# ---------------------------------------------------------------------------------------------------

requires_gpu = pytest.mark.skipif(not _gpu_available(), reason="needs an NVIDIA GPU and PyTorch with CUDA")


def _record(benchmark, result):
    benchmark.extra_info.update(result)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    print(f"\n{result['case']}: scratchdet {result['ours_ms']:.3f} ms, {result['peer']} {result['peer_ms']:.3f} ms, "
          f"ratio ours/peer {result['ratio']:.2f}")


@requires_gpu
@pytest.mark.parametrize("shape", CONV_SHAPES, ids=lambda s: "x".join(map(str, s[:4])) + f"-{s[4]}")
def test_conv2d_forward_backward_vs_cudnn(benchmark, shape):
    result = conv_case(shape)
    _record(benchmark, result)
    assert result["max_error"] < 1e-2


@requires_gpu
def test_linear_vs_cublas(benchmark):
    result = linear_case()
    _record(benchmark, result)
    assert result["max_error"] < 1e-2


@requires_gpu
def test_training_step_vs_pytorch(benchmark):
    result = train_step_case()
    _record(benchmark, result)
    assert result["max_error"] < 1e-3


@requires_gpu
@pytest.mark.parametrize("scenario", list(NMS_SCENARIOS))
def test_nms_vs_torchvision(benchmark, scenario):
    result = nms_case(scenario)
    _record(benchmark, result)
    assert result["same_as_cpu"]


@requires_gpu
def test_fast_rcnn_on_gpu_vs_cpu(benchmark):
    for result in detector_case():
        _record(benchmark, result)


@requires_gpu
def test_batched_nms_vs_torchvision(benchmark):
    result = nms_case("few_kept", classes=NMS_CLASSES)
    _record(benchmark, result)
    assert result["same_as_cpu"]


# ---------------------------------------------------------------------------------------------------
# script: one markdown table
# ---------------------------------------------------------------------------------------------------


def markdown_table(results, device_name):
    lines = [
        f"GPU: {device_name}; {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
        "best of 5 (NMS: 10) synchronised calls after warm-up; FP32 throughout. Device: the GPU's own time",
        "per call (5 calls queued behind a sleeping kernel, CUDA events), without the host's.",
        "",
        "| case | scratchdet (ms) | peer | peer (ms) | ours / peer | device ms, ours / peer | device ratio | notes |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        notes = []
        if "ours_tflops" in r:
            notes.append(f"{r['ours_tflops']:.1f} vs {r['peer_tflops']:.1f} TFLOP/s")
        if "tf32_ms" in r:
            notes.append(f"cuDNN TF32 {r['tf32_ms']:.3f} ms")
        if "first_call_s" in r:
            notes.append(f"first call (compiles) {r['first_call_s']:.1f} s")
        if "max_error" in r:
            notes.append(f"max diff {r['max_error']:.1e}")
        if "same_as_cpu" in r:
            notes.append(f"same boxes as CPU: {r['same_as_cpu']}; boxes differing from torchvision: {r['differs_from_peer']}")
        if r.get("device_ratio") is not None:
            device = f"{r['ours_device_ms']:.3f} / {r['peer_device_ms']:.3f} | {r['device_ratio']:.2f}"
        else:
            device = "n/a | n/a"
        lines.append(
            f"| {r['case']} | {r['ours_ms']:.3f} | {r['peer']} | {r['peer_ms']:.3f} | {r['ratio']:.2f} | {device} | {'; '.join(notes)} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))  # the first paragraph
    parser.add_argument("--out", help="write the markdown table here")
    parser.add_argument("--only", default="conv,linear,train,nms,detectors",
                        help="comma-separated cases: conv,linear,train,nms,detectors")
    parser.add_argument("--breakdown", action="store_true", help="also time the stages of the convolutions, the training step and NMS")
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    if not _gpu_available():
        print("bench_cuda: needs an NVIDIA GPU and PyTorch with CUDA", file=sys.stderr)
        return 2
    import torch

    device_name = torch.cuda.get_device_name()
    cases = [("conv", shape) for shape in CONV_SHAPES] + [("linear", None), ("train", None)]
    cases += [("nms", s) for s in NMS_SCENARIOS] + [("batched_nms", "few_kept"), ("detectors", None)]
    cases = [case for case in cases if case[0].replace("batched_", "") in only]
    results, failed = [], 0
    for kind, arg in cases:
        start = time.perf_counter()
        try:
            if kind == "conv":
                result = conv_case(arg)
            elif kind == "linear":
                result = linear_case()
            elif kind == "train":
                result = train_step_case()
            elif kind == "nms":
                result = nms_case(arg)
            elif kind == "batched_nms":
                result = nms_case(arg, classes=NMS_CLASSES)
            else:
                result = detector_case()
        except Exception as error:  # report and go on: one failing case must not lose the others
            print(f"{kind} {arg}: FAILED {type(error).__name__}: {error}", flush=True)
            failed += 1
            continue
        for result in result if isinstance(result, list) else [result]:
            results.append(result)
            print(f"{result['case']}: ours {result['ours_ms']:.3f} ms (median {result['ours_median_ms']:.3f}), "
                  f"{result['peer']} {result['peer_ms']:.3f} ms, ratio {result['ratio']:.2f} "
                  f"[{time.perf_counter() - start:.1f} s] {result}", flush=True)
    from scratchdet.kernels.cuda import gemm

    print("Tiles chosen by autotuning {(product, m, n, k, batches, dtype, ...): (tm, tn) or (ty, tx, tm, tn)}:")
    for key, tile in gemm.chosen_tiles().items():
        print(f"  {key}: {tile}")
    table = markdown_table(results, device_name)
    if args.breakdown and "conv" in only:
        for shape in CONV_SHAPES:
            stages = conv_breakdown(shape)
            table += f"\nStages of one conv2d forward + backward, {'x'.join(map(str, shape[:4]))}->{shape[4]} (ms, best of 5):\n\n"
            table += "| stage | ms |\n| --- | ---: |\n" + "".join(f"| {name} | {ms:.3f} |\n" for name, ms in stages.items())
    if args.breakdown and "train" in only:
        stages = train_breakdown()
        table += f"\nStages of the training step, {TRAIN_BATCH}x3x{TRAIN_IMAGE}x{TRAIN_IMAGE} (ms, best of 5):\n\n"
        table += "| stage | ms |\n| --- | ---: |\n" + "".join(f"| {name} | {ms:.3f} |\n" for name, ms in stages.items())
    if args.breakdown and "nms" in only:
        for scenario in NMS_SCENARIOS:
            stages = nms_breakdown(scenario)
            table += f"\nStages of NMS of {N_BOXES} boxes, {scenario} (ms, best of 10):\n\n"
            table += "| stage | ms |\n| --- | ---: |\n" + "".join(f"| {name} | {ms:.3f} |\n" for name, ms in stages.items())
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
