"""Kernel launches through `scratchdet.kernels.cuda.launch`: after Numba's first launch of a kernel
with given argument types, later launches skip Numba's generic path, with parameters checked once
against the ones Numba's own marshalling builds. Against the stand-in driver nothing runs, so these
tests check which path a launch takes and what it passes; on a GPU they also check the results."""

import ctypes

import numpy as np
import pytest
from numba import cuda

from scratchdet.backend import to_device
from scratchdet.kernels.cuda import boxes, common, launch, optim
from scratchdet.kernels.cuda import nn as cuda_nn
from scratchdet.kernels.cuda.launch import Kernel, jit

def _device(rng, *shape, dtype=np.float32):
    return to_device(rng.standard_normal(shape).astype(dtype), "cuda")


def _driver_launches():
    """Launches the stand-in driver has seen."""
    library = ctypes.CDLL("libcuda.so.1")
    library.fake_cuda_launches.restype = ctypes.c_longlong
    return library.fake_cuda_launches()


def _layer_calls(rng):
    """A forward and backward of the small layers, losses, optimisers and box coding on the GPU."""
    x3, w3, b3 = _device(rng, 2, 3, 9, 10), _device(rng, 4, 3, 3, 3), _device(rng, 4)
    x8, w8, b8 = _device(rng, 2, 8, 7, 6), _device(rng, 5, 8, 3, 3), _device(rng, 5)
    a, w, b = _device(rng, 6, 40), _device(rng, 7, 40), _device(rng, 7)
    proposals_, gt = (to_device(np.array([[0, 0, 10, 12], [3, 4, 20, 18]], np.float32), "cuda") for _ in range(2))
    params = [_device(rng, 5), _device(rng, 3, 4)]
    grads = [_device(rng, 5), _device(rng, 3, 4)]

    def calls():
        y3 = cuda_nn.conv2d_forward(x3, w3, b3, 1, 1)
        cuda_nn.conv2d_backward(y3, x3, w3, 1, 1)
        y8 = cuda_nn.conv2d_forward(x8, w8, b8, 2, 1)
        cuda_nn.conv2d_backward(y8, x8, w8, 2, 1)
        ya = cuda_nn.linear_forward(a, w, b)
        cuda_nn.linear_backward(ya, a, w)
        r = cuda_nn.relu_forward(y3)
        cuda_nn.relu_backward(r, y3)
        p = cuda_nn.maxpool2d_forward(y3, 2, 2)
        cuda_nn.maxpool2d_backward(p, y3, 2, 2)
        cuda_nn.dropout_forward(y3, 0.25, 7)
        optim.sgd_update_many(params, grads, [common.zeros(q.shape, np.float32) for q in params],
                             lr=0.1, momentum=0.9, weight_decay=1e-4)
        boxes.encode(proposals_, gt)
        common.zeros((3, 5), np.int64)

    return calls


def test_every_kernel_a_layer_launches_takes_the_short_path_with_numbas_parameters(rng, fake):
    calls = _layer_calls(rng)
    calls()  # Numba launches (and compiles) each kernel once, and its parameters are checked
    kernels = [k for k in launch.kernels() if k._plans]
    assert len(kernels) >= 10, "the layer calls should have launched a dozen kernels"
    refused = [f"{k.py_func.__name__}: {key}" for k in kernels for key, plan in k._plans.items() if plan is None]
    assert not refused, f"launches left to Numba (parameters differ from Numba's, or a type not handled): {refused}"
    if fake:
        before = _driver_launches()
        x = _device(rng, 3, 5)
        cuda_nn.relu_forward(x)  # one kernel: one launch reaches the driver
        assert _driver_launches() - before == 1


def test_array_keys_say_what_numba_types_the_arrays_as(fake):
    """`_array_info`'s key (dtype, ndim, layout) for arrays of every layout Numba tells apart."""
    base = cuda.to_device(np.arange(24, dtype=np.float32).reshape(4, 6))
    arrays = [
        base, base.T, base[:, ::2], base[::2], base[1:3], base[:, 1], base[1], base.reshape(24),
        cuda.to_device(np.zeros((2, 3, 4), np.float64)), cuda.to_device(np.zeros((0, 3), np.int64)),
        cuda.to_device(np.zeros(5, np.uint8)), cuda.to_device(np.zeros((3, 1), np.bool_)),
        common.empty((5, 2), np.float32), common.empty((1, 1, 3), np.uint64),
    ]
    for a in arrays:
        numba_type = a._numba_type_
        kind, dtype, ndim, layout = launch._array_info(a)[0]
        assert kind is type(a)
        assert (dtype, ndim, layout) == (a.dtype, numba_type.ndim, numba_type.layout), (a.shape, a.strides)
        params = launch._array_info(a)[1]
        assert params == (0, 0, a.size, a.dtype.itemsize, a.device_ctypes_pointer.value, *a.shape, *a.strides)


@jit
def copy_2d(src, dst):
    i, j = cuda.grid(2)
    if i < src.shape[0] and j < src.shape[1]:
        dst[i, j] = src[i, j]


def test_c_and_f_ordered_arrays_get_their_own_compiled_kernel_and_plan(fake):
    host = np.arange(20, dtype=np.float32).reshape(4, 5)
    for _ in range(2):  # the second round takes the short path
        for src in (cuda.to_device(host), cuda.to_device(np.asfortranarray(host)), cuda.to_device(host)[:, ::2]):
            dst = cuda.to_device(np.zeros(src.shape, np.float32))
            copy_2d[(1, 1), (8, 8)](src, dst)
            if not fake:
                np.testing.assert_array_equal(dst.copy_to_host(), src.copy_to_host())
    assert len(copy_2d.overloads) == 3  # C, F, A
    assert len(copy_2d._plans) == 3 and all(copy_2d._plans.values())


@jit
def scalars(out, tuple_of_arrays, count, scale, flag, small, wide, half_tuple):
    if cuda.grid(1) == 0:
        first, second = tuple_of_arrays
        out[0] = count
        out[1] = scale
        out[2] = 1.0 if flag else 0.0
        out[3] = small
        out[4] = wide
        out[5] = first[0] + second[1]
        out[6] = half_tuple[0] + half_tuple[1]


def test_scalars_and_tuples_of_every_kind_are_passed_as_numba_passes_them(fake):
    out = cuda.to_device(np.zeros(7, np.float64))
    pair = (cuda.to_device(np.array([1.5], np.float32)), cuda.to_device(np.array([0, 2.5], np.float32)))
    args = (out, pair, 7, 0.5, True, np.float32(0.25), np.uint64(2**40), (3, 4))
    for _ in range(2):
        scalars[1, 32](*args)
    assert list(scalars._plans.values()) and all(scalars._plans.values())
    if not fake:
        np.testing.assert_array_equal(out.copy_to_host(), [7, 0.5, 1, 0.25, 2**40, 4.0, 7])
    # an int beyond int64 is typed uint64 by Numba: such a call is left to Numba's path
    assert not launch._flatten((2**63,), [], [])
    key, params = [], []
    assert launch._flatten((2**63 - 1, (1.5, True)), key, params)
    assert key == [int, (float, bool)] and params == [2**63 - 1, 1.5, True]


@jit("void(float32[::1], int32)")
def fill_explicit(a, value):
    i = cuda.grid(1)
    if i < a.size:
        a[i] = value


def test_kernels_compiled_for_explicit_types_and_other_configurations_are_left_to_numba(fake):
    a = cuda.to_device(np.zeros(40, np.float32))
    for _ in range(2):
        fill_explicit[1, 64](a, 3)  # Numba converts the int64 to the signature's int32
    assert list(fill_explicit._plans.values()) == [None]
    copies_before = dict(copy_2d._plans)
    host = np.ones((2, 2), np.float32)
    copy_2d[(1, 1), (2, 2), 0, 0](cuda.to_device(host), cuda.to_device(host))  # stream and shared memory given
    assert copy_2d._plans == copies_before
    if not fake:
        np.testing.assert_array_equal(a.copy_to_host(), 3)


def test_device_functions_and_the_launch_error_stay_numbas():
    @jit(device=True)
    def twice(x):
        return 2 * x

    assert not isinstance(twice, Kernel)
    with pytest.raises(ValueError):
        copy_2d(cuda.to_device(np.zeros((1, 1), np.float32)), cuda.to_device(np.zeros((1, 1), np.float32)))
