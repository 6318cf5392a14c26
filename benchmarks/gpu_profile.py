"""Where the time of the CUDA backend goes on a real GPU: the host's share and the device's, per operation.

`bench_cuda.py` times each call between two device synchronisations, so a small operation's time is
the host's (Python, Numba's launch, cuMemAlloc) plus the GPU's, and the two cannot be told apart.
Here the GPU is first kept busy by a kernel that sleeps (`bench_cuda.queued_time`, 50 ms); while it
sleeps, the host queues `calls` calls of the operation, and

- host time per call = wall time of queuing them (the GPU cannot be waited for: it is asleep);
- device time per call = CUDA events recorded before and after them (the queued work runs back to
  back once the sleeper ends, with no gaps for the host to fill),

then a cProfile of a few convolution layers and training steps names the host's costs.
Usage (on a machine with an NVIDIA GPU): ``python benchmarks/gpu_profile.py``. Without one,
``python benchmarks/fake_cuda/build.py python benchmarks/gpu_profile.py`` runs it against a stand-in
driver whose calls cost nothing and which runs no kernel: the host column is then the Python of each
operation alone (no driver time), the device column 0. An operation that
copies a result to the host (a loss read as a float) waits for the sleeper and is marked "syncs".
"""

import cProfile
import gc
import io
import pstats
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def split_time(fn, calls=10):
    """(host us per call, device us per call, syncs) of `bench_cuda.queued_time`; `syncs`: fn waited for
    the device, so the device time includes the host's gaps."""
    from bench_cuda import queued_time

    host, device, in_time = queued_time(fn, calls)
    return host * 1e6, device * 1e6, not in_time


def main():
    from numba import cuda

    from bench_cuda import LINEAR_SHAPE, TRAIN_BATCH, TRAIN_IMAGE, _small_net
    from scratchdet import nn
    from scratchdet.backend import to_device
    from scratchdet.kernels.cuda import common
    from scratchdet.kernels.cuda import nn as cuda_nn
    from scratchdet.kernels.cuda.common import empty, flat, launch_1d
    from scratchdet.kernels.cuda.launch import jit

    rng = np.random.default_rng(0)

    @cuda.jit
    def nothing(a):
        pass

    def nothing_many_py(a, b, c, d, e, f, g, s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12, s13):
        pass

    nothing_many = cuda.jit(nothing_many_py)
    nothing_many_fast = jit(nothing_many_py)  # scratchdet's kernels: Numba's first launch, then the short path

    small = to_device(np.zeros(16, np.float32), "cuda")
    square = small.reshape(4, 4)
    # Numba caches a description of each array object on it at its first launch: a fresh array (a new
    # output, a new view) costs more than one launched before
    specialized = nothing_many.specialize(small, small, small, small, small, small, small, *range(14))
    ops = {
        "launch, 1 array argument": lambda: nothing[1, 32](small),
        "launch, 7 arrays + 14 ints": lambda: nothing_many[1, 32](small, small, small, small, small, small, small, *range(14)),
        "launch, 7 arrays + 14 ints, specialized (no type dispatch)": lambda: specialized[1, 32](
            small, small, small, small, small, small, small, *range(14)),
        "launch, 7 arrays + 14 ints, scratchdet's jit (launch.py's short path)": lambda: nothing_many_fast[1, 32](
            small, small, small, small, small, small, small, *range(14)),
        "launch, 1 array argument, a new view each call": lambda: nothing[1, 32](square.reshape(16)),
        "a new view alone (square.reshape(16))": lambda: square.reshape(16),
        "flat(x) (a reshape)": lambda: flat(small.reshape(4, 4)),
        "empty 64 KB": lambda: empty((16384,), np.float32),
        "empty 17 MB": lambda: empty((256, 16, 32, 32), np.float32),
        "empty 134 MB": lambda: empty((256, 32, 64, 64), np.float32),
    }
    act = to_device(rng.standard_normal((256, 32, 32, 32), dtype=np.float32), "cuda")
    act_out = empty(act.shape, np.float32)
    ops["relu kernel on 256x32x32x32 (no allocation)"] = lambda: cuda_nn.relu_forward_kernel[launch_1d(act.size)](flat(act), flat(act_out))
    ops["relu_forward 256x32x32x32"] = lambda: cuda_nn.relu_forward(act)
    ops["maxpool2d_forward 256x32x32x32"] = lambda: cuda_nn.maxpool2d_forward(act, 2, 2)
    # run 3: the linear layer's wall time was 0.98 ms, 1.88 ms with the caching allocator (unexplained)
    n, d_in, d_out = LINEAR_SHAPE
    lx, lw, lb, ldy = (to_device(rng.standard_normal(shape, dtype=np.float32), "cuda")
                       for shape in ((n, d_in), (d_out, d_in), (d_out,), (n, d_out)))
    ops[f"linear_forward {n}x{d_in}->{d_out}"] = lambda: cuda_nn.linear_forward(lx, lw, lb)
    ops[f"linear_backward {n}x{d_in}->{d_out}"] = lambda: cuda_nn.linear_backward(ldy, lx, lw)
    for n, c, h, w, k in ((256, 3, 32, 32, 16), (256, 3, 64, 64, 32), (256, 32, 32, 32, 64), (256, 64, 16, 16, 128)):
        name = f"{n}x{c}x{h}x{w}->{k}"
        x = to_device(rng.standard_normal((n, c, h, w), dtype=np.float32), "cuda")
        weight = to_device(rng.standard_normal((k, c, 3, 3), dtype=np.float32), "cuda")
        bias = to_device(np.zeros(k, np.float32), "cuda")
        dy = to_device(rng.standard_normal((n, k, h, w), dtype=np.float32), "cuda")
        ops[f"conv2d_forward {name}"] = lambda x=x, weight=weight, bias=bias: cuda_nn.conv2d_forward(x, weight, bias, 1, 1)
        ops[f"conv2d_backward {name}"] = lambda dy=dy, x=x, weight=weight: cuda_nn.conv2d_backward(dy, x, weight, 1, 1)
        if c <= cuda_nn.FEW_CHANNELS:
            dx = empty(x.shape, np.float32)
            for rows in cuda_nn.FEW_CHANNELS_ROWS:
                ops[f"dx {name}, {rows} row(s) per thread"] = lambda dy=dy, weight=weight, dx=dx, rows=rows: (
                    cuda_nn.input_grad_few_channels(dy, weight, 1, 1, dx, rows=rows))

    x = rng.standard_normal((TRAIN_BATCH, 3, TRAIN_IMAGE, TRAIN_IMAGE), dtype=np.float32)
    labels = to_device(rng.integers(0, 10, TRAIN_BATCH), "cuda")
    model = _small_net(nn).to("cuda")
    optimizer = nn.SGD(model, lr=0.01, momentum=0.9, weight_decay=5e-4)
    xd = to_device(x, "cuda")

    def step():
        scores = model.forward(xd)
        loss, dscores = nn.softmax_cross_entropy(scores, labels)
        model.backward(dscores, input_grad=False)
        optimizer.step()
        return loss

    def step_without_loss_read():
        scores = model.forward(xd)
        dscores = scores  # the gradient's shape; its values do not change the time
        model.backward(dscores, input_grad=False)
        optimizer.step()

    ops["training step (forward, loss, backward, SGD)"] = step
    ops["training step without the loss (forward, backward, SGD)"] = step_without_loss_read
    ops["SGD step alone"] = optimizer.step

    print(f"GPU: {cuda.get_current_device().name.decode() if isinstance(cuda.get_current_device().name, bytes) else cuda.get_current_device().name}")
    print("| operation | host us / call | device us / call | note |")
    print("| --- | ---: | ---: | --- |")
    for name, fn in ops.items():
        try:
            host, device, syncs = split_time(fn, calls=3 if name.startswith("training") else 10)
        except Exception as error:  # report and go on: this is a diagnostic
            print(f"| {name} | failed: {type(error).__name__}: {error} | | |", flush=True)
            continue
        print(f"| {name} | {host:.1f} | {device:.1f} | {'syncs (waits for the device)' if syncs else ''} |", flush=True)

    xs = to_device(rng.standard_normal((256, 3, 32, 32), dtype=np.float32), "cuda")
    ws = to_device(rng.standard_normal((16, 3, 3, 3), dtype=np.float32), "cuda")
    bs = to_device(np.zeros(16, np.float32), "cuda")
    dys = to_device(rng.standard_normal((256, 16, 32, 32), dtype=np.float32), "cuda")

    def small_conv():
        cuda_nn.conv2d_forward(xs, ws, bs, 1, 1)
        cuda_nn.conv2d_backward(dys, xs, ws, 1, 1)

    # does Python's garbage collector take a share of the host time? (the same calls with it off)
    print("\n| conv2d fwd+bwd 256x3x32x32->16 | host us / call | device us / call |")
    print("| --- | ---: | ---: |")
    for label in ("garbage collector on", "garbage collector off", "garbage collector on again"):
        if label.endswith("off"):
            gc.disable()
        host, device, _ = split_time(small_conv, calls=20)
        gc.enable()
        print(f"| {label} | {host:.1f} | {device:.1f} |", flush=True)

    for title, fn, count in (
        ("conv2d forward + backward 256x3x32x32->16, 50 times", small_conv, 50),
        ("training step without the loss read, 10 times", step_without_loss_read, 10),
    ):

        fn()
        cuda.synchronize()
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(count):
            fn()
        cuda.synchronize()
        profile.disable()
        text = io.StringIO()
        pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(40)
        print(f"\n== cProfile: {title} (sorted by own time)\n{text.getvalue()}", flush=True)
        text = io.StringIO()
        pstats.Stats(profile, stream=text).sort_stats("cumulative").print_stats(40)
        print(f"\n== cProfile: {title} (sorted by cumulative time)\n{text.getvalue()}", flush=True)
    common.release_memory()


if __name__ == "__main__":
    main()
