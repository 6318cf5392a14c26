"""CUDA twins of the optimiser updates of `scratchdet.nn.functional`: SGD with momentum and Adam.

The update of each element is `shared.sgd_element` / `shared.adam_element`, the statements the CPU
kernels of `scratchdet.kernels.cpu.nn` run, updating the parameter and its optimiser state in place.

A model's parameters are updated together: one launch covers up to GROUP parameters, passed as
tuples of arrays, its threads running over the first parameter's elements, then the second's, and so
on (PyTorch's `foreach` optimisers do the same with lists of tensors). On a GPU a launch costs
27-68 us of host time (benchmarks/GPU_RESULTS.md, run 3), and the SGD step of a 4-layer net, 8
launches, took 547 us of host time for 15 us of GPU work.
"""

import numpy as np
from numba import cuda

from scratchdet.errors import InvalidArgumentError
from scratchdet.kernels.cuda.common import flat, launch_1d, on_device, require_device
from scratchdet.kernels.cuda.launch import jit
from scratchdet.kernels.shared import nn as shared

sgd_element = cuda.jit(device=True, inline="always")(shared.sgd_element)
adam_element = cuda.jit(device=True, inline="always")(shared.adam_element)

# Parameters per launch. Numba passes each 1-D array as 7 64-bit values (56 bytes), and a kernel's
# arguments must fit in 4 KB: Adam's 4 arrays per parameter take 2,688 bytes for 12 parameters.
GROUP = 12


@jit(cache=True)
def sgd_update_kernel(params, grads, velocities, lr, momentum, weight_decay):
    """SGD with momentum and L2 weight decay on tuples of flat arrays (one entry per parameter):
    thread k updates element k of the parameters laid end to end."""
    k = cuda.grid(1)
    for t in range(len(params)):
        size = params[t].size
        if k < size:
            sgd_element(params[t], grads[t], velocities[t], k, lr, momentum, weight_decay)
            return
        k -= size


@jit(cache=True)
def adam_update_kernel(params, grads, ms, vs, correction1, correction2, lr, beta1, beta2, eps, weight_decay):
    """Adam with L2 weight decay on tuples of flat arrays, laid end to end as `sgd_update_kernel`'s."""
    k = cuda.grid(1)
    for t in range(len(params)):
        size = params[t].size
        if k < size:
            adam_element(params[t], grads[t], ms[t], vs[t], k, correction1, correction2, lr, beta1, beta2, eps,
                         weight_decay)
            return
        k -= size


def _check_update(param, *others):
    require_device("param", param)
    if not param.is_c_contiguous() or param.dtype not in (np.float32, np.float64):
        raise InvalidArgumentError(f"param must be a C-contiguous float32/float64 device array, got {param.dtype}")
    for other in others:
        require_device("optimiser state", other)
        if other.shape != param.shape or other.dtype != param.dtype or not other.is_c_contiguous():
            raise InvalidArgumentError(
                f"optimiser arrays must match param (shape {param.shape}, {param.dtype}, contiguous); "
                f"got {other.shape} {other.dtype}"
            )


def _groups(arrays):
    """The parameters' index ranges, GROUP at a time, ``[(start, stop)]``, after checking the lists
    (`arrays`: params first, then their gradients and states): equally long, one dtype, shapes matching."""
    first = arrays[0]
    if any(len(a) != len(first) for a in arrays):
        raise InvalidArgumentError(f"one gradient and state per parameter: got lists of {[len(a) for a in arrays]}")
    for i, param in enumerate(first):
        _check_update(param, *(a[i] for a in arrays[1:]))
        if param.dtype != first[0].dtype:
            raise InvalidArgumentError(f"parameters updated together share one dtype: {first[0].dtype} and {param.dtype}")
    return [(start, min(start + GROUP, len(first))) for start in range(0, len(first), GROUP)]


def _launch(kernel, arrays, start, stop, *scalars):
    views = tuple(tuple(flat(a) for a in column[start:stop]) for column in arrays)
    total = sum(a.size for a in views[0])
    if total:
        kernel[launch_1d(total)](*views, *scalars)


@on_device
def sgd_update_many(params, grads, velocities, *, lr, momentum, weight_decay):
    """CUDA twin of `scratchdet.nn.functional.sgd_update_many`: SGD on every parameter of a list, in
    place, GROUP parameters per launch. params, grads, velocities: equal-length sequences of float
    device arrays, one dtype, each grad and velocity shaped like its param, C-contiguous. Returns None."""
    arrays = (list(params), list(grads), list(velocities))
    if not arrays[0]:
        return
    for start, stop in _groups(arrays):
        _launch(sgd_update_kernel, arrays, start, stop, float(lr), float(momentum), float(weight_decay))


@on_device
def adam_update_many(params, grads, ms, vs, *, step, lr, beta1, beta2, eps, weight_decay):
    """CUDA twin of `scratchdet.nn.functional.adam_update_many` (in place, `step` counts from 1, GROUP
    parameters per launch). params, grads, ms, vs: equal-length sequences of float device arrays, one
    dtype, each shaped like its param, C-contiguous. Returns None."""
    if int(step) < 1:
        raise InvalidArgumentError(f"adam step must be >= 1, got {step!r}")
    arrays = (list(params), list(grads), list(ms), list(vs))
    if not arrays[0]:
        return
    # the bias corrections depend only on the step: computed once, on the host, as the CPU does
    correction1 = 1.0 - float(beta1) ** int(step)
    correction2 = 1.0 - float(beta2) ** int(step)
    for start, stop in _groups(arrays):
        _launch(adam_update_kernel, arrays, start, stop, correction1, correction2, float(lr), float(beta1),
                float(beta2), float(eps), float(weight_decay))


def sgd_update(param, grad, velocity, *, lr, momentum, weight_decay):
    """CUDA twin of `scratchdet.nn.functional.sgd_update`: `sgd_update_many` of one parameter."""
    sgd_update_many((param,), (grad,), (velocity,), lr=lr, momentum=momentum, weight_decay=weight_decay)


def adam_update(param, grad, m, v, *, step, lr, beta1, beta2, eps, weight_decay):
    """CUDA twin of `scratchdet.nn.functional.adam_update`: `adam_update_many` of one parameter."""
    adam_update_many((param,), (grad,), (m,), (v,), step=step, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                     weight_decay=weight_decay)


def compile_signatures():
    """``(name, kernel, argument types)`` of the update kernels for float32 parameters: one parameter,
    and a full group."""
    from numba import float32, float64, types

    out = []
    for count in (1, GROUP):
        arrays = types.UniTuple(float32[::1], count)
        out.append((f"sgd_update_{count}_float32", sgd_update_kernel, (arrays,) * 3 + (float64,) * 3))
        out.append((f"adam_update_{count}_float32", adam_update_kernel, (arrays,) * 4 + (float64,) * 7))
    return out
