"""The host's time per CUDA operation, without a GPU: scratchdet's launch path and memory cache against
Numba's own, at the GPU benchmarks' shapes.

On a GPU the small layers are bound by the host (benchmarks/GPU_RESULTS.md, run 3 on an H200: the
256x3x32x32 -> 16 convolution's forward and backward queued 1.08 ms of host work for 0.20 ms of GPU
work). Here every operation runs against the stand-in driver of `benchmarks/fake_cuda` (Numba's real
CUDA path; every driver call returns at once, no kernel runs), so what is timed is the Python of the
operation alone: Numba's, cuda.core's and scratchdet's. The real driver adds its own time on top
(run 3: about 10-65 us per cudaMalloc, a few us per launch), which the cache and the launch path
cannot remove from a launch, and removes from an allocation.

Each configuration runs in fresh processes (the switches are read at import), twice, alternating:

- ``scratchdet``: the defaults: launches through `kernels/cuda/launch.py`'s short path, arrays from
  `memory.DevicePool`;
- ``numba``: ``SCRATCHDET_CUDA_FAST_LAUNCH=0 SCRATCHDET_CUDA_CACHE=0``: every launch and allocation
  through Numba, as in GPU run 3.

Usage: ``python benchmarks/host_time.py`` (needs a C compiler and numba-cuda; prints a markdown table,
best of the rounds, each the best of `REPEATS` means over `CALLS` calls).
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "fake_cuda"))

CALLS = 20
REPEATS = 5
CONFIGS = {
    "scratchdet": {"SCRATCHDET_CUDA_FAST_LAUNCH": "1", "SCRATCHDET_CUDA_CACHE": "1"},
    "numba": {"SCRATCHDET_CUDA_FAST_LAUNCH": "0", "SCRATCHDET_CUDA_CACHE": "0"},
}


def operations():
    """``{name: fn}``: the operations timed, on device arrays at the GPU benchmarks' shapes."""
    from bench_cuda import CONV_SHAPES, LINEAR_SHAPE, TRAIN_BATCH, TRAIN_IMAGE, _small_net

    from scratchdet import nn
    from scratchdet.backend import to_device
    from scratchdet.kernels.cuda import nn as cuda_nn

    rng = np.random.default_rng(0)

    def device(*shape):
        return to_device(rng.standard_normal(shape, dtype=np.float32), "cuda")

    ops = {}
    for n, c, h, w, k in CONV_SHAPES:
        x, weight, bias, dy = device(n, c, h, w), device(k, c, 3, 3), device(k), device(n, k, h, w)

        def conv(x=x, weight=weight, bias=bias, dy=dy):
            cuda_nn.conv2d_forward(x, weight, bias, 1, 1)
            cuda_nn.conv2d_backward(dy, x, weight, 1, 1)

        ops[f"conv2d fwd+bwd {n}x{c}x{h}x{w}->{k}"] = conv
    n, d_in, d_out = LINEAR_SHAPE
    lx, lw, lb, ldy = device(n, d_in), device(d_out, d_in), device(d_out), device(n, d_out)

    def linear():
        cuda_nn.linear_forward(lx, lw, lb)
        cuda_nn.linear_backward(ldy, lx, lw)

    ops[f"linear fwd+bwd {n}x{d_in}->{d_out}"] = linear
    act = device(256, 32, 32, 32)
    ops["relu_forward 256x32x32x32"] = lambda: cuda_nn.relu_forward(act)
    model = _small_net(nn).to("cuda")
    optimizer = nn.SGD(model, lr=0.01, momentum=0.9, weight_decay=5e-4)
    images = device(TRAIN_BATCH, 3, TRAIN_IMAGE, TRAIN_IMAGE)

    def step():  # as gpu_profile.py: the loss's gradient is shaped like the scores (no loss read)
        scores = model.forward(images)
        model.backward(scores, input_grad=False)
        optimizer.step()

    ops["training step without the loss read (3 conv + 1 fc, SGD)"] = step
    ops["SGD step alone (8 parameters)"] = optimizer.step
    return ops


def detector_operations():
    """``{name: fn}``: Fast R-CNN's training step as `bench_cuda.detector_case` times it (its losses
    are read from memory no kernel wrote, which the step does not check; detection is left out: it
    refuses the non-finite box deltas such memory holds)."""
    from host_ops import detector_ops

    return {name: fn for name, fn in detector_ops().items() if "training step" in name}


def measure(names=None, calls=CALLS, repeats=REPEATS):
    """``{name: microseconds per call}``: each operation warmed up, then the best of `repeats` means."""
    results = {}
    ops = operations()
    if names is None or any(name.startswith("Fast R-CNN") for name in names):
        ops.update(detector_operations())
    for name, fn in ops.items():
        if names is not None and name not in names:
            continue
        for _ in range(3):  # compilation, the first launch through Numba, kept views and tables
            fn()
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            best = min(best, (time.perf_counter() - start) / calls)
        results[name] = best * 1e6
    return results


def main():
    import build

    directory = build.build()
    best = {config: {} for config in CONFIGS}
    with tempfile.TemporaryDirectory() as cache_dir:
        for _round in range(2):
            for config, switches in CONFIGS.items():
                env = build.environment(directory, cache_dir)
                env.update(switches)
                out = subprocess.run([sys.executable, __file__, "--measure"], env=env, check=True,
                                     capture_output=True, text=True).stdout
                for name, us in json.loads(out.splitlines()[-1]).items():
                    best[config][name] = min(best[config].get(name, float("inf")), us)
    print("| operation | scratchdet (us) | Numba's launch and allocator (us) | numba / scratchdet |")
    print("| --- | ---: | ---: | ---: |")
    for name, ours in best["scratchdet"].items():
        theirs = best["numba"][name]
        print(f"| {name} | {ours:.1f} | {theirs:.1f} | {theirs / ours:.2f} |")


if __name__ == "__main__":
    if sys.argv[1:] == ["--measure"]:
        import warnings

        warnings.simplefilter("ignore")
        print(json.dumps(measure()))
    else:
        main()
