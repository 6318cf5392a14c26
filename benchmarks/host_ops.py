"""How much host-side work each CUDA operation queues: kernel launches, device allocations and views.

On a GPU the small layers are bound by the host, not the device: in run 3 on an H200
(benchmarks/GPU_RESULTS.md) a Numba launch cost 27-68 us of Python and driver time, an allocation
28-84 us and a device-array view (a reshape) 10-19 us, while the whole GPU work of a 256x3x32x32 -> 16
convolution's forward and backward was 0.20 ms. These counts are what a change to the host path can
lower, and unlike times they can be taken on any machine: this script runs the real code paths in
Numba's CUDA simulator with every kernel launch counted and *skipped* (nothing is computed, so the
benchmark shapes themselves are used), every ``cuda.device_array`` counted (and filled with zeros,
so that a result the host reads back, a loss or a count of kept boxes, is 0 rather than whatever the
memory held), every view of a device array (``reshape``, slicing) counted, and every copy between
the host and the device (``to_device``, ``copy_to_host``) counted.

Usage (the variable must be set before numba is imported):

    NUMBA_ENABLE_CUDASIM=1 python benchmarks/host_ops.py

Prints a markdown table: per call, steady state (each operation is called once first, so the
kept views, offset tables and work buffers already exist, as they do in a training loop).
"""

import collections
import contextlib
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


@contextlib.contextmanager
def counting(counts):
    """Count kernel launches (skipping them), device allocations (zero-filled), views and host-device
    copies into `counts` (a Counter: "launches", "allocations", "views", "copies").

    What a skipped kernel would have computed and the library keeps across calls, the implicit GEMM's
    offset tables (`conv_gemm.device_tables`), is dropped on the way out: later real launches build
    their own instead of reading zeros."""
    from numba import cuda
    from numba.cuda.simulator import kernel as sim_kernel
    from numba.cuda.simulator.cudadrv import devicearray as sim_array

    from scratchdet.kernels.cuda import conv_gemm

    kernel_call = sim_kernel.FakeCUDAKernel.__call__
    device_array = cuda.device_array
    to_device = cuda.to_device
    reshape = sim_array.FakeCUDAArray.reshape
    getitem = sim_array.FakeCUDAArray.__getitem__
    copy_to_host = sim_array.FakeCUDAArray.copy_to_host

    def launch(self, *args):
        if self._device or sim_kernel._kernel_context:  # a device function, inside a kernel
            return kernel_call(self, *args)
        counts["launches"] += 1
        return None

    def allocate(*args, **kwargs):
        counts["allocations"] += 1
        result = device_array(*args, **kwargs)
        result[...] = 0
        return result

    def upload(*args, **kwargs):
        counts["copies"] += 1
        return to_device(*args, **kwargs)

    def download(self, *args, **kwargs):
        counts["copies"] += 1
        return copy_to_host(self, *args, **kwargs)

    def view(self, *args, **kwargs):
        counts["views"] += 1
        return reshape(self, *args, **kwargs)

    def item(self, index):
        result = getitem(self, index)
        if isinstance(result, sim_array.FakeCUDAArray):
            counts["views"] += 1
        return result

    replacements = [
        (sim_kernel.FakeCUDAKernel, "__call__", launch),
        (cuda, "device_array", allocate),
        (cuda, "to_device", upload),
        (sim_array.FakeCUDAArray, "reshape", view),
        (sim_array.FakeCUDAArray, "__getitem__", item),
        (sim_array.FakeCUDAArray, "copy_to_host", download),
    ]
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in replacements]
    tables_before = set(conv_gemm._tables)
    for owner, name, replacement in replacements:
        setattr(owner, name, replacement)
    try:
        yield counts
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)
        for key in set(conv_gemm._tables) - tables_before:  # built by skipped kernels: zeros
            del conv_gemm._tables[key]


def count_ops(fn):
    """Launches, allocations, views and copies of one call of `fn`, after a first call (steady state)."""
    with counting(collections.Counter()) as counts:
        fn()  # the first call: kept views, offset tables, work buffers
        counts.clear()
        fn()
    return counts


def operations():
    """{name: zero-argument callable}: the operations of `bench_cuda.py` and `gpu_profile.py`."""
    from bench_cuda import CONV_SHAPES, LINEAR_SHAPE, TRAIN_BATCH, TRAIN_IMAGE, _small_net
    from scratchdet import nn
    from scratchdet.backend import to_device
    from scratchdet.kernels.cuda import nn as cuda_nn

    def device_zeros(shape, dtype=np.float32):
        return to_device(np.zeros(shape, dtype), "cuda")

    ops = {}
    for n, c, h, w, k in CONV_SHAPES:
        name = f"{n}x{c}x{h}x{w}->{k}"
        x, weight, bias, dy = device_zeros((n, c, h, w)), device_zeros((k, c, 3, 3)), device_zeros(k), device_zeros((n, k, h, w))
        ops[f"conv2d_forward {name}"] = lambda x=x, weight=weight, bias=bias: cuda_nn.conv2d_forward(x, weight, bias, 1, 1)
        ops[f"conv2d_backward {name}"] = lambda dy=dy, x=x, weight=weight: cuda_nn.conv2d_backward(dy, x, weight, 1, 1)
    n, d_in, d_out = LINEAR_SHAPE
    x, weight, bias, dy = device_zeros((n, d_in)), device_zeros((d_out, d_in)), device_zeros(d_out), device_zeros((n, d_out))
    ops[f"linear_forward {n}x{d_in}->{d_out}"] = lambda: cuda_nn.linear_forward(x, weight, bias)
    ops[f"linear_backward {n}x{d_in}->{d_out}"] = lambda: cuda_nn.linear_backward(dy, x, weight)
    act = device_zeros((256, 32, 32, 32))
    ops["relu_forward 256x32x32x32"] = lambda: cuda_nn.relu_forward(act)
    ops["maxpool2d_forward 256x32x32x32"] = lambda: cuda_nn.maxpool2d_forward(act, 2, 2)

    model = _small_net(nn).to("cuda")
    optimizer = nn.SGD(model, lr=0.01, momentum=0.9, weight_decay=5e-4)
    images = device_zeros((TRAIN_BATCH, 3, TRAIN_IMAGE, TRAIN_IMAGE))

    def step_without_loss():  # as gpu_profile.py: the loss's gradient is shaped like the scores
        scores = model.forward(images)
        model.backward(scores, input_grad=False)
        optimizer.step()

    ops["training step without the loss (forward, backward, SGD)"] = step_without_loss
    ops["SGD step alone (8 parameters)"] = optimizer.step
    ops.update(detector_ops())
    return ops


def detector_ops():
    """Fast R-CNN's training step and detection as `bench_cuda.detector_case` times them."""
    from bench_cuda import DET_IMAGE, DET_NETWORK, DET_PROPOSALS, DET_ROIS
    from scratchdet import nn
    from scratchdet.data.shapes import shapes_dataset
    from scratchdet.models import FastRCNN
    from scratchdet.train import roi_batches

    data = shapes_dataset(2, image_size=(DET_IMAGE, DET_IMAGE), objects=(1, 2), size=(max(4, DET_IMAGE // 8), DET_IMAGE // 3), seed=0)
    rng = np.random.default_rng(0)
    corners = np.sort(rng.uniform(0, DET_IMAGE, (len(data.images), DET_PROPOSALS, 2, 2)), axis=2)
    props = [boxes[(boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)]
             for boxes in corners.reshape(len(data.images), DET_PROPOSALS, 4)]
    batch = roi_batches(data.images, data.boxes, data.labels, props, rois_per_image=DET_ROIS, seed=0)(0)
    model = FastRCNN(data.classes, rng=0, **DET_NETWORK).to("cuda")
    optimizer = nn.SGD(model, lr=0.001, momentum=0.9)
    detector = FastRCNN(data.classes, rng=0, **DET_NETWORK).to("cuda").eval()

    def step():
        model.training_step(batch)
        optimizer.step()

    return {
        f"Fast R-CNN training step, 2 images {DET_IMAGE}x{DET_IMAGE}, {len(batch.rois)} RoIs, SGD": step,
        f"Fast R-CNN detection, 1 image, {len(props[0])} proposals": lambda: detector.predict(data.images[0], props[0]),
    }


def main():
    from scratchdet.backend import simulated

    if not simulated():
        sys.exit("run with NUMBA_ENABLE_CUDASIM=1: launches are counted (and skipped) in Numba's simulator")
    print("| operation | launches | allocations | views | host-device copies |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, fn in operations().items():
        counts = count_ops(fn)
        print(f"| {name} | {counts['launches']} | {counts['allocations']} | {counts['views']} | {counts['copies']} |", flush=True)
    return 0


if __name__ == "__main__":
    if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
        sys.exit("set NUMBA_ENABLE_CUDASIM=1 before running (numba reads it at import)")
    sys.exit(main())
