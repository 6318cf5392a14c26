"""The CUDA per-pixel stages of region proposals against their CPU twins, and their H100 compilation.

Run with ``NUMBA_ENABLE_CUDASIM=1 python -m pytest -q tests/cuda/test_proposals_cuda.py``; the
images are a few pixels wide because the simulator runs every thread in Python.
"""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from scratchdet.errors import InvalidArgumentError
from scratchdet.proposals import pixels
from scratchdet.proposals.felzenszwalb import felzenszwalb

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def rgb(rng):
    image = rng.integers(0, 256, size=(5, 6, 3), dtype=np.uint8)
    image[0, 0] = 0  # black, grey and saturated pixels exercise the branches of the conversions
    image[0, 1] = 128
    image[0, 2] = (255, 0, 0)
    return image


@pytest.mark.parametrize("colour_space", ["rgb", "hsv", "lab", "rgi", "i", "h"])
def test_colour_conversion_matches_cpu(rgb, gpu, close, colour_space):
    close(pixels.convert_colour(gpu(rgb), colour_space), pixels.convert_colour(rgb, colour_space),
          rtol=1e-6, atol=1e-4, what=colour_space)


def test_smoothing_and_gradients_match_cpu(rng, gpu, close):
    image = (rng.random((5, 7, 2)) * 255).astype(np.float32)
    close(pixels.smooth(gpu(image), 0.8), pixels.smooth(image, 0.8), rtol=1e-5, atol=1e-3, what="smooth")
    for ours, theirs, name in zip(pixels.gaussian_gradients(gpu(image), 1.0), pixels.gaussian_gradients(image, 1.0), "xy"):
        close(ours, theirs, rtol=1e-5, atol=1e-3, what=f"g{name}")


def test_grid_weights_match_cpu(rng, gpu, close):
    image = (rng.random((4, 5, 3)) * 255).astype(np.float32)
    close(pixels.grid_weights(gpu(image)), pixels.grid_weights(image), rtol=1e-6, atol=1e-4, what="weights")


def test_histogram_bins_and_region_histograms_match_cpu(rgb, gpu, host, close):
    image = pixels.convert_colour(rgb, "hsv")
    gx, gy = pixels.gaussian_gradients(image, 1.0)
    colour_bin, texture_bin = pixels.colour_bins(image), pixels.texture_bins(gx, gy)
    np.testing.assert_array_equal(host(pixels.colour_bins(gpu(image))), colour_bin)
    np.testing.assert_array_equal(host(pixels.texture_bins(gpu(gx), gpu(gy))), texture_bin)
    labels = felzenszwalb(rgb, scale=200, sigma=0.0, min_size=3)
    n = int(labels.max()) + 1
    ours = pixels.region_histograms(gpu(labels), n, gpu(colour_bin), gpu(texture_bin))
    theirs = pixels.region_histograms(labels, n, colour_bin, texture_bin)
    for o, t, name in zip(ours, theirs, ("sizes", "colour", "texture")):
        close(o, t, rtol=1e-6, atol=1e-7, what=name)


def test_region_histograms_of_a_region_without_pixels_are_zero_as_on_the_cpu(rgb, gpu, close):
    image = pixels.convert_colour(rgb, "hsv")
    gx, gy = pixels.gaussian_gradients(image, 1.0)
    colour_bin, texture_bin = pixels.colour_bins(image), pixels.texture_bins(gx, gy)
    labels = (felzenszwalb(rgb, scale=200, sigma=0.0, min_size=3) * 2).astype(np.int32)  # odd ids have no pixels
    n = int(labels.max()) + 2
    ours = pixels.region_histograms(gpu(labels), n, gpu(colour_bin), gpu(texture_bin))
    theirs = pixels.region_histograms(labels, n, colour_bin, texture_bin)
    assert not theirs[1][1::2].any() and not theirs[2][1::2].any()
    for o, t, name in zip(ours, theirs, ("sizes", "colour", "texture")):
        close(o, t, rtol=1e-6, atol=1e-7, what=name)


@pytest.mark.parametrize(
    "n_regions, n_colour_bins, message",
    [(2, 25, "outside 0..1"), (50, 5, "beyond 5 colour")],
    ids=["fewer-regions-than-the-labels-name", "fewer-bins-than-the-bins-hold"],
)
def test_region_histograms_reject_ids_and_bins_out_of_range(rng, gpu, n_regions, n_colour_bins, message):
    # the histograms are indexed by region id and bin: out of range, the atomic adds wrote past them
    image = (rng.random((4, 5, 3)) * 255).astype(np.float32)
    colour_bin = pixels.colour_bins(image)
    texture_bin = pixels.texture_bins(*pixels.gaussian_gradients(image, 1.0))
    colour_bin[0, 0, 0] = 24
    labels = rng.integers(0, 2, size=(4, 5)).astype(np.int32)
    labels[1, 1] = 49 if n_regions == 50 else 2
    with pytest.raises(InvalidArgumentError, match=message):
        pixels.region_histograms(gpu(labels), n_regions, gpu(colour_bin), gpu(texture_bin), n_colour_bins=n_colour_bins)


def test_region_histograms_and_colours_reject_mismatched_shapes(rng, gpu):
    labels = np.zeros((4, 5), np.int32)
    with pytest.raises(InvalidArgumentError, match="must agree"):
        pixels.region_histograms(gpu(labels), 1, gpu(np.zeros((4, 6, 3), np.uint8)), gpu(np.zeros((4, 6, 3, 8), np.uint8)))
    with pytest.raises(InvalidArgumentError, match=r"\(H, W, 3\)"):
        pixels.convert_colour(gpu(np.zeros((4, 5, 4), np.uint8)), "hsv")


_COMPILE_SCRIPT = """
import types
from numba import cuda
import numba.cuda.dispatcher as dispatcher
try:
    cuda.compile_ptx(lambda a: None, "void(float32[::1])", cc=(9, 0))
except Exception as error:
    print("SKIP", type(error).__name__, str(error).splitlines()[0] if str(error) else "")
    raise SystemExit(0)
if not cuda.is_available():  # device functions ask the driver for its compute capability
    dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=(9, 0))
from scratchdet.kernels.cuda import proposals
for name, kernel, signature in proposals.compile_signatures():
    ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=(9, 0))
    assert ".target sm_90" in ptx and ".entry" in ptx, name
    print("OK", name)
"""


def test_every_kernel_compiles_for_an_h100():
    # compile_ptx needs Numba's real CUDA target, which the simulator replaces: compile in a
    # separate process without NUMBA_ENABLE_CUDASIM.
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0"}
    run = subprocess.run([sys.executable, "-c", _COMPILE_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    if run.stdout.startswith("SKIP"):
        pytest.skip(f"cannot compile CUDA kernels here: {run.stdout.strip()}")
    compiled = {line.split()[1] for line in run.stdout.splitlines() if line.startswith("OK")}
    assert compiled == {"convert_colour", "correlate_rows", "correlate_columns", "grid_weights", "colour_bins",
                        "texture_max", "texture_scale", "texture_bins", "region_histograms", "normalise_rows"}
