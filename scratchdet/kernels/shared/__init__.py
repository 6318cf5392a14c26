"""Scalar logic shared by the CPU and the CUDA kernels (Style habit 4).

Every function here is plain Python on plain numbers, with no decorator and no call to another
Python function, so that `numba.njit` (in `scratchdet.kernels.cpu`) and `numba.cuda.jit(device=True)`
(in `scratchdet.kernels.cuda`) can both compile it: the CPU and the GPU then cannot disagree on a
convention. With `NUMBA_DISABLE_JIT=1` they run as ordinary Python.
"""
