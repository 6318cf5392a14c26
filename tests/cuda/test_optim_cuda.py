"""The CUDA optimiser updates against their CPU twins, over several steps."""

import numpy as np
import pytest

from scratchdet.errors import InvalidArgumentError
from scratchdet.nn import functional as F


@pytest.mark.parametrize("shape", [(1,), (37,), (3, 5, 2)])
def test_sgd_update_matches_cpu_over_three_steps(rng, gpu, close, shape):
    param = rng.standard_normal(shape).astype(np.float32)
    velocity = np.zeros(shape, np.float32)
    param_gpu, velocity_gpu = gpu(param), gpu(velocity)
    for _ in range(3):
        grad = rng.standard_normal(shape).astype(np.float32)
        F.sgd_update(param, grad, velocity, lr=0.1, momentum=0.9, weight_decay=5e-4)
        F.sgd_update(param_gpu, gpu(grad), velocity_gpu, lr=0.1, momentum=0.9, weight_decay=5e-4)
    close(param_gpu, param, rtol=1e-6, atol=1e-7, what="param")
    close(velocity_gpu, velocity, rtol=1e-6, atol=1e-7, what="velocity")


@pytest.mark.parametrize("shape", [(1,), (37,), (3, 5, 2)])
def test_adam_update_matches_cpu_over_three_steps(rng, gpu, close, shape):
    param = rng.standard_normal(shape).astype(np.float32)
    m, v = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    param_gpu, m_gpu, v_gpu = gpu(param), gpu(m), gpu(v)
    for step in range(1, 4):
        grad = rng.standard_normal(shape).astype(np.float32)
        kwargs = dict(step=step, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-4)
        F.adam_update(param, grad, m, v, **kwargs)
        F.adam_update(param_gpu, gpu(grad), m_gpu, v_gpu, **kwargs)
    for name, a, b in (("param", param_gpu, param), ("m", m_gpu, m), ("v", v_gpu, v)):
        close(a, b, rtol=1e-5, atol=1e-7, what=name)


def test_updates_reject_state_of_another_shape(gpu):
    param = gpu(np.zeros(4, np.float32))
    with pytest.raises(InvalidArgumentError, match="must match param"):
        F.sgd_update(param, gpu(np.zeros(4, np.float32)), gpu(np.zeros(5, np.float32)), lr=0.1, momentum=0.0, weight_decay=0.0)
    with pytest.raises(InvalidArgumentError, match="step"):
        F.adam_update(param, param, param, param, step=0, lr=0.1, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.0)
    integers = gpu(np.zeros(4, np.int64))
    with pytest.raises(InvalidArgumentError, match="float32/float64"):
        F.sgd_update(integers, integers, integers, lr=0.1, momentum=0.0, weight_decay=0.0)


@pytest.mark.parametrize("group", [12, 2], ids=["one launch", "launches of 2"])
def test_many_parameters_updated_together_match_cpu_one_by_one(rng, gpu, close, monkeypatch, group):
    """Parameters of 1, 37, 300 and 0 elements and a 3 x 5 x 2 block, laid end to end over one
    launch's threads (or cut into launches of `group`), over three SGD and three Adam steps."""
    from scratchdet.kernels.cuda import optim

    monkeypatch.setattr(optim, "GROUP", group)
    shapes = [(1,), (37,), (300,), (0,), (3, 5, 2)]
    params = [rng.standard_normal(shape).astype(np.float32) for shape in shapes]
    velocities = [np.zeros(shape, np.float32) for shape in shapes]
    ms, vs = [np.zeros(shape, np.float32) for shape in shapes], [np.zeros(shape, np.float32) for shape in shapes]
    on_gpu = {name: [gpu(a) for a in arrays] for name, arrays in
              (("params", params), ("velocities", velocities), ("ms", ms), ("vs", vs))}
    for step in range(1, 4):
        grads = [rng.standard_normal(shape).astype(np.float32) for shape in shapes]
        sgd = dict(lr=0.1, momentum=0.9, weight_decay=5e-4)
        adam = dict(step=step, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-4)
        for param, grad, velocity, m, v in zip(params, grads, velocities, ms, vs):
            F.sgd_update(param, grad, velocity, **sgd)
            F.adam_update(param, grad, m, v, **adam)
        grads_gpu = [gpu(g) for g in grads]
        F.sgd_update_many(on_gpu["params"], grads_gpu, on_gpu["velocities"], **sgd)
        F.adam_update_many(on_gpu["params"], grads_gpu, on_gpu["ms"], on_gpu["vs"], **adam)
    for name, expected in (("params", params), ("velocities", velocities), ("ms", ms), ("vs", vs)):
        for i, (a, b) in enumerate(zip(on_gpu[name], expected)):
            close(a, b, rtol=1e-5, atol=1e-7, what=f"{name}[{i}]")


def test_updating_many_refuses_mismatched_lists_dtypes_and_devices(gpu):
    a32, b32 = gpu(np.zeros(4, np.float32)), gpu(np.zeros(4, np.float32))
    a64 = gpu(np.zeros(4, np.float64))
    sgd = dict(lr=0.1, momentum=0.0, weight_decay=0.0)
    with pytest.raises(InvalidArgumentError, match="one gradient and state per parameter"):
        F.sgd_update_many([a32, b32], [a32], [a32, b32], **sgd)
    with pytest.raises(InvalidArgumentError, match="share one dtype"):
        F.sgd_update_many([a32, a64], [b32, gpu(np.zeros(4, np.float64))], [gpu(np.zeros(4, np.float32)), gpu(np.zeros(4, np.float64))], **sgd)
    with pytest.raises(InvalidArgumentError, match="some arrays are on the GPU"):
        F.sgd_update_many([a32], [np.zeros(4, np.float32)], [b32], **sgd)
    with pytest.raises(InvalidArgumentError, match="must match param"):
        F.adam_update_many([a32], [b32], [gpu(np.zeros(5, np.float32))], [b32], step=1, lr=0.1, beta1=0.9, beta2=0.99,
                           eps=1e-8, weight_decay=0.0)
