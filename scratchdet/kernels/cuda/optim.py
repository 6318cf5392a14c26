"""CUDA twins of the optimiser updates of `scratchdet.nn.functional`: SGD with momentum and Adam.

One thread per parameter, updating the parameter and its optimiser state in place, with the same
statements in the same order as the CPU kernels of `scratchdet.kernels.cpu.nn`.
"""

import math

import numpy as np
from numba import cuda

from scratchdet.errors import InvalidArgumentError
from scratchdet.kernels.cuda.common import flat, launch_1d, on_device, require_device


@cuda.jit(cache=True)
def sgd_update_kernel(param, grad, velocity, lr, momentum, weight_decay):
    """SGD with momentum and L2 weight decay, PyTorch's form (no dampening):

    g = grad + weight_decay * param;  velocity = momentum * velocity + g;  param -= lr * velocity
    """
    k = cuda.grid(1)
    if k < param.size:
        g = grad[k] + weight_decay * param[k]
        velocity[k] = momentum * velocity[k] + g
        param[k] -= lr * velocity[k]


@cuda.jit(cache=True)
def adam_update_kernel(param, grad, m, v, correction1, correction2, lr, beta1, beta2, eps, weight_decay):
    """Adam (Kingma and Ba 2015, Algorithm 1) with L2 weight decay added to the gradient:

    m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2;
    param -= lr (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)
    """
    k = cuda.grid(1)
    if k < param.size:
        g = grad[k] + weight_decay * param[k]
        m[k] = beta1 * m[k] + (1.0 - beta1) * g
        v[k] = beta2 * v[k] + (1.0 - beta2) * g * g
        param[k] -= lr * (m[k] / correction1) / (math.sqrt(v[k] / correction2) + eps)


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


@on_device
def sgd_update(param, grad, velocity, *, lr, momentum, weight_decay):
    """CUDA twin of `scratchdet.nn.functional.sgd_update` (in place on device arrays). param, grad,
    velocity: float device arrays of one shape and dtype, C-contiguous. Returns None."""
    _check_update(param, grad, velocity)
    if param.size:
        sgd_update_kernel[launch_1d(param.size)](
            flat(param), flat(grad), flat(velocity), float(lr), float(momentum), float(weight_decay)
        )


@on_device
def adam_update(param, grad, m, v, *, step, lr, beta1, beta2, eps, weight_decay):
    """CUDA twin of `scratchdet.nn.functional.adam_update` (in place; `step` counts from 1). param,
    grad, m, v: float device arrays of one shape and dtype, C-contiguous. Returns None."""
    _check_update(param, grad, m, v)
    if int(step) < 1:
        raise InvalidArgumentError(f"adam step must be >= 1, got {step!r}")
    # the bias corrections depend only on the step: computed once, on the host, as the CPU does
    correction1 = 1.0 - float(beta1) ** int(step)
    correction2 = 1.0 - float(beta2) ** int(step)
    if param.size:
        adam_update_kernel[launch_1d(param.size)](
            flat(param), flat(grad), flat(m), flat(v), correction1, correction2,
            float(lr), float(beta1), float(beta2), float(eps), float(weight_decay),
        )


def compile_signatures():
    """``(name, kernel, argument types)`` of the update kernels for float32 parameters."""
    from numba import float32, float64

    out = []
    for ft in (float32,):
        a = ft[::1]
        out.append((f"sgd_update_{ft}", sgd_update_kernel, (a, a, a, float64, float64, float64)))
        out.append((f"adam_update_{ft}", adam_update_kernel, (a, a, a, a) + (float64,) * 7))
    return out
