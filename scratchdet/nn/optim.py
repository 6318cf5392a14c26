"""Optimisers (SGD with momentum and weight decay, Adam) and a step learning-rate schedule.

An optimiser holds a model's parameters by reference (layer, key) and updates them in place from the
gradients that `model.backward` left in `layer.grads`, through the update kernels
`F.sgd_update_many` / `F.adam_update_many` (CPU or CUDA, by the arrays; on the GPU all the parameters
of one dtype in one launch per dozen, since a launch costs the host more than a small update costs
the GPU). Its per-parameter state (velocity, moments) is created on the parameter's device the first
time it is needed, and follows the parameter when the model moves (`model.to`), so `opt.to` is only
needed to move it ahead of the next step.
"""

import math
import numbers

import numpy as np

from scratchdet.backend import device_of, to_device, to_host, zeros_like
from scratchdet.errors import DataFormatError, InvalidArgumentError
from scratchdet.nn import functional as F


def _check_setting(name, value, low, high, low_inclusive=True):
    """An optimiser setting as a float in [low, high) (or (low, high) when not `low_inclusive`),
    or an `InvalidArgumentError` naming it."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise InvalidArgumentError(f"{name} must be a number, got {value!r}")
    if not ((low <= value if low_inclusive else low < value) and value < high):
        bracket = "[" if low_inclusive else "("
        raise InvalidArgumentError(f"{name} must be in {bracket}{low}, {high}), got {value!r}")
    return float(value)


class Optimizer:
    """Base class: the parameter list, the learning rate, state save / restore and device moves."""

    STATE_NAMES = ()  # the per-parameter state arrays a subclass keeps, e.g. ("m", "v") for Adam

    def __init__(self, model, lr):
        self.lr = _check_setting("learning rate lr", lr, 0.0, math.inf, low_inclusive=False)
        self.parameters = list(model.named_parameters())  # [(name, layer, key)]
        self.state = {}  # name -> {state name: array}
        self.step_count = 0

    def _state(self, name, layer, key, names):
        param = layer.params[key]
        if name not in self.state:
            self.state[name] = {s: zeros_like(param) for s in names}
        entries = self.state[name]
        device = device_of(param)
        if any(device_of(value) != device for value in entries.values()):  # the model moved: its state follows
            for s in entries:
                entries[s] = to_device(entries[s], device)
        return entries

    def step(self):
        """Update every parameter once from its current gradient."""
        self.step_count += 1
        # the parameters by device and dtype (one update call each): (params, grads, {state name: arrays})
        groups = {}
        for name, layer, key in self.parameters:
            param = layer.params[key]
            state = self._state(name, layer, key, self.STATE_NAMES)
            params, grads, states = groups.setdefault(
                (device_of(param), np.dtype(param.dtype).str), ([], [], {s: [] for s in self.STATE_NAMES})
            )
            params.append(param)
            grads.append(layer.grads[key])
            for s in self.STATE_NAMES:
                states[s].append(state[s])
        for params, grads, states in groups.values():
            self._update(params, grads, states)

    def _update(self, params, grads, states):
        """Update `params` (a list of arrays on one device, one dtype) from `grads`, with their state
        arrays `states` ({state name: list})."""
        raise NotImplementedError

    def to(self, device):
        """Move the optimiser state to "cpu" or "cuda" (the model moves with `model.to`). Returns self."""
        for entries in self.state.values():
            for s in entries:
                entries[s] = to_device(entries[s], device)
        return self

    def state_dict(self):
        """Host copies of the state, for an exactly resumable checkpoint: {"name/state": array} plus "step"."""
        out = {"step": np.array(self.step_count, dtype=np.int64), "lr": np.array(self.lr)}
        for name, entries in self.state.items():
            for s, value in entries.items():
                out[f"{name}/{s}"] = to_host(value).copy()
        return out

    def load_state_dict(self, state):
        """Restore what `state_dict` returned (arrays are copied to the parameters' device)."""
        try:
            self.step_count = int(state["step"])
            self.lr = float(state["lr"])
        except KeyError as error:
            raise DataFormatError(f"optimiser state is missing {error.args[0]!r}") from error
        except (TypeError, ValueError) as error:
            raise DataFormatError(f"optimiser state 'step' and 'lr' must be numbers: {error}") from error
        names = {name for name, _, _ in self.parameters}
        unknown = sorted(k for k in state if k not in ("step", "lr") and k.rpartition("/")[0] not in names)
        if unknown:
            raise DataFormatError(f"optimiser state names parameters this model does not have: {unknown[:5]}")
        self.state = {}
        for name, layer, key in self.parameters:
            prefix = name + "/"
            entries = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if not entries:
                continue  # this parameter had not been updated yet
            # every state array of this optimiser, and nothing else (e.g. not SGD's state given to Adam)
            if set(entries) != set(self.STATE_NAMES):
                raise DataFormatError(
                    f"optimiser state of {name} holds {sorted(entries)}, {type(self).__name__} needs {sorted(self.STATE_NAMES)}"
                )
            param = layer.params[key]
            for s, value in entries.items():
                if not isinstance(value, np.ndarray) or value.shape != param.shape:
                    raise DataFormatError(
                        f"optimiser state {name}/{s} has shape {getattr(value, 'shape', type(value).__name__)}, expected {param.shape}"
                    )
            device = "cuda" if not isinstance(param, np.ndarray) else "cpu"
            self.state[name] = {s: to_device(np.asarray(v, dtype=param.dtype).copy(), device) for s, v in entries.items()}


class SGD(Optimizer):
    """Stochastic gradient descent with momentum and L2 weight decay (PyTorch's `SGD`, no dampening):

        g = grad + weight_decay * param;  v = momentum * v + g;  param -= lr * v
    """

    STATE_NAMES = ("velocity",)

    def __init__(self, model, lr, momentum=0.0, weight_decay=0.0):
        super().__init__(model, lr)
        self.momentum = _check_setting("momentum", momentum, 0.0, 1.0)
        self.weight_decay = _check_setting("weight_decay", weight_decay, 0.0, math.inf)

    def _update(self, params, grads, states):
        F.sgd_update_many(
            params, grads, states["velocity"], lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
        )


class Adam(Optimizer):
    """Adam (Kingma and Ba 2015, Algorithm 1), with L2 weight decay added to the gradient (PyTorch's `Adam`)."""

    STATE_NAMES = ("m", "v")

    def __init__(self, model, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        super().__init__(model, lr)
        self.beta1 = _check_setting("beta1", beta1, 0.0, 1.0)
        self.beta2 = _check_setting("beta2", beta2, 0.0, 1.0)
        self.eps = _check_setting("eps", eps, 0.0, math.inf, low_inclusive=False)
        self.weight_decay = _check_setting("weight_decay", weight_decay, 0.0, math.inf)

    def _update(self, params, grads, states):
        F.adam_update_many(
            params, grads, states["m"], states["v"], step=self.step_count,
            lr=self.lr, beta1=self.beta1, beta2=self.beta2, eps=self.eps, weight_decay=self.weight_decay,
        )


class StepLR:
    """Step learning-rate schedule: lr = base_lr * gamma ** (epoch // step_size) (PyTorch's `StepLR`).

    Call `step()` once per epoch (or per iteration, if step_size counts iterations); it sets
    `optimizer.lr`.
    """

    def __init__(self, optimizer, step_size, gamma=0.1):
        self.step_size = F._check_positive_int("step_size", step_size)
        self.gamma = _check_setting("gamma", gamma, 0.0, math.inf, low_inclusive=False)
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.epoch = 0

    def step(self):
        """End an epoch: lr = base_lr * gamma ** (epoch // step_size). Returns the new learning rate."""
        self.epoch += 1
        self.optimizer.lr = self.base_lr * self.gamma ** (self.epoch // self.step_size)
        return self.optimizer.lr

    def state_dict(self):
        """{"epoch", "base_lr"} as arrays, for an exactly resumable checkpoint (with the optimiser's)."""
        return {"epoch": np.array(self.epoch, dtype=np.int64), "base_lr": np.array(self.base_lr)}

    def load_state_dict(self, state):
        """Restore what `state_dict` returned; the optimiser's lr is restored by its own `load_state_dict`."""
        try:
            epoch, base_lr = int(state["epoch"]), float(state["base_lr"])
        except KeyError as error:
            raise DataFormatError(f"learning-rate schedule state is missing {error.args[0]!r}") from error
        except (TypeError, ValueError) as error:
            raise DataFormatError(f"learning-rate schedule 'epoch' and 'base_lr' must be numbers: {error}") from error
        if epoch < 0 or not base_lr > 0:
            raise DataFormatError(f"learning-rate schedule state needs epoch >= 0 and base_lr > 0, got {epoch}, {base_lr}")
        self.epoch, self.base_lr = epoch, base_lr
