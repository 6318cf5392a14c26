"""A whole training step of a small conv net on the GPU: the same numbers as on the CPU, and no copy
between host and device inside the step except the loss value.

This is the promise the detectors rely on: `model.to("cuda")` is the only change needed to train
on the GPU.
"""

import numpy as np
import pytest
from numba import cuda

from scratchdet import backend, nn


def small_net(seed):
    """conv - relu - pool - conv - relu - flatten - dropout - linear: every layer kind of a detector head."""
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1, rng=seed),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(3, 3, 3, padding=1, rng=seed + 1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Dropout(0.25, rng=seed + 2),
        nn.Linear(3 * 2 * 2, 3, rng=seed + 3),
    )


def train_step(model, optimizer, x, labels):
    scores = model.forward(x)
    loss, dscores = nn.softmax_cross_entropy(scores, labels)
    model.backward(dscores, input_grad=False)  # the images need no gradient
    optimizer.step()
    return loss


def test_training_step_on_gpu_matches_cpu_and_copies_only_the_loss(rng, monkeypatch):
    x = rng.standard_normal((2, 2, 4, 4)).astype(np.float32)
    labels = np.array([0, 2])
    cpu_model = small_net(0)
    gpu_model = small_net(0).to("cuda")  # the one change
    cpu_opt = nn.SGD(cpu_model, lr=0.1, momentum=0.9, weight_decay=1e-4)
    gpu_opt = nn.SGD(gpu_model, lr=0.1, momentum=0.9, weight_decay=1e-4)
    x_gpu, labels_gpu = backend.to_device(x, "cuda"), backend.to_device(labels, "cuda")

    # count the copies between host and device during the GPU step
    copies = {"to_host": 0, "to_device": 0}
    array_type = type(x_gpu)
    original_copy_to_host, original_to_device = array_type.copy_to_host, cuda.to_device

    def counting_copy_to_host(self, *args, **kwargs):
        copies["to_host"] += 1
        return original_copy_to_host(self, *args, **kwargs)

    def counting_to_device(*args, **kwargs):
        copies["to_device"] += 1
        return original_to_device(*args, **kwargs)

    monkeypatch.setattr(array_type, "copy_to_host", counting_copy_to_host)
    monkeypatch.setattr(cuda, "to_device", counting_to_device)
    loss_gpu = train_step(gpu_model, gpu_opt, x_gpu, labels_gpu)
    monkeypatch.undo()
    assert copies == {"to_host": 1, "to_device": 0}, f"host/device copies inside one step: {copies}"

    loss_cpu = train_step(cpu_model, cpu_opt, x, labels)
    assert loss_gpu == pytest.approx(loss_cpu, rel=1e-5)
    for (name, cpu_layer, key), (_, gpu_layer, _) in zip(cpu_model.named_parameters(), gpu_model.named_parameters()):
        assert backend.is_cuda_array(gpu_layer.params[key]), f"{name} left the GPU"
        np.testing.assert_allclose(
            backend.to_host(gpu_layer.params[key]), cpu_layer.params[key], rtol=1e-4, atol=1e-6, err_msg=name
        )
        np.testing.assert_allclose(
            backend.to_host(gpu_opt.state[name]["velocity"]), cpu_opt.state[name]["velocity"], rtol=1e-4, atol=1e-6,
            err_msg=f"{name} velocity",
        )
