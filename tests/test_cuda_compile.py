"""Every CUDA kernel compiles for a real GPU (an H100, compute capability 9.0), GPU or not.

Numba's simulator runs Python that CUDA's compiler rejects (untyped lists, recursion, objects,
non-constant shared-array shapes), so the simulator tests alone do not prove that a kernel can run
on a GPU. `numba.cuda.compile_ptx` really compiles each kernel with NVVM, for the argument types the
library launches it with; it needs NVVM (the CUDA toolkit) and NVRTC (the pip package
nvidia-cuda-nvrtc), not a GPU. This file runs in a normal process: not under the simulator.
"""

import os
import types

import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    pytest.skip("compile_ptx needs the real CUDA target; this run uses the simulator", allow_module_level=True)

from numba import cuda  # noqa: E402

from scratchdet.kernels.cuda import boxes, common, conv_gemm, gemm, nn, optim, reduce  # noqa: E402

H100 = (9, 0)
MODULES = (common, reduce, gemm, conv_gemm, nn, optim, boxes)
SIGNATURES = [entry for module in MODULES for entry in module.compile_signatures()]


@pytest.fixture(scope="module")
def compiler(request):
    """compile_ptx, or a skip naming what is missing (NVVM or NVRTC).

    A kernel that calls a device function (`iou_pair`, `block_sum`, ...) makes Numba compile that
    function for "the current GPU", asking the driver for its compute capability; without a GPU the
    answer is an H100's.
    """
    import numba.cuda.dispatcher as dispatcher

    def probe(a):
        a[0] = 1.0

    try:
        cuda.compile_ptx(probe, "void(float32[::1])", cc=H100)
    except Exception as error:  # NVVM or NVRTC missing, or an unusable toolkit
        pytest.skip(f"cannot compile CUDA kernels here ({type(error).__name__}: {str(error).splitlines()[0]})")
    if not cuda.is_available():
        original = dispatcher.get_current_device
        dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=H100)
        request.addfinalizer(lambda: setattr(dispatcher, "get_current_device", original))
    return cuda.compile_ptx


@pytest.mark.parametrize(("name", "kernel", "signature"), SIGNATURES, ids=[entry[0] for entry in SIGNATURES])
def test_kernel_compiles_for_h100(compiler, name, kernel, signature):
    # with the kernel's own launch bounds (`boxes.SCAN_OPTIONS`): they change what the compiler may do
    launch_bounds = kernel.targetoptions.get("launch_bounds")
    ptx, return_type = compiler(kernel.py_func, signature, cc=H100, launch_bounds=launch_bounds)
    assert ".target sm_90" in ptx, f"{name}: PTX is not for sm_90"
    assert ".entry" in ptx, f"{name}: no kernel entry point in the PTX"
    if launch_bounds:
        assert f".maxntid {launch_bounds[0]}" in ptx, f"{name}: the launch bounds did not reach the PTX"


def test_every_kernel_of_the_cuda_modules_is_compiled():
    """A kernel added to a module without a signature in its `compile_signatures` would go unchecked."""
    from numba.cuda.dispatcher import CUDADispatcher

    from scratchdet.kernels.cuda.launch import Kernel

    listed = {id(kernel) for _, kernel, _ in SIGNATURES}
    missing = []
    for module in MODULES:
        for attr, value in vars(module).items():
            kernel = value.dispatcher if isinstance(value, Kernel) else value
            if isinstance(kernel, CUDADispatcher) and not kernel.targetoptions.get("device") and id(value) not in listed:
                missing.append(f"{module.__name__}.{attr}")
    assert not missing, f"kernels without a compile signature: {missing}"


@pytest.mark.parametrize("name", ["gemm_4x4_float32", "gemm_8x8_float32", "conv_gemm_16x16x4x4_float32", "conv_gemm_4x64x1x4_float32"])
def test_gemm_threads_read_their_tiles_16_bytes_at_a_time(compiler, name):
    """Runs of 4 adjacent outputs per thread and 16-byte aligned tiles (`gemm.owned`, `gemm.VECTOR`):
    the multiply step's shared-memory loads compile to vector loads, a quarter of the scalar ones."""
    (kernel, signature), = [(k, s) for n, k, s in SIGNATURES if n == name]
    ptx, _ = compiler(kernel.py_func, signature, cc=H100)
    assert "ld.shared.v4.f32" in ptx, f"{name}: no 16-byte shared-memory loads"
