"""Numerical gradient checks: centred differences in float64 and the relative error (cs231n style).

    df/dx_i ~ (f(x + eps e_i) - f(x - eps e_i)) / (2 eps)

whose error is O(eps**2); with eps = 1e-6 in float64 a correct backward agrees to ~1e-8 or better.
"""

import numpy as np

from scratchdet.errors import InvalidArgumentError


def numerical_gradient(f, x, eps=1e-6):
    """Centred-difference gradient of the scalar function f at x (x is perturbed in place, then restored).

    Args:
        f: callable taking no arguments and returning a float that depends on x's current values.
        x: float64 array, any layout (a strided view is perturbed in place too).

    Returns:
        float64 array of x's shape (C-contiguous).
    """
    if not isinstance(x, np.ndarray) or x.dtype != np.float64:
        raise InvalidArgumentError(f"gradient checks need float64 arrays, got {getattr(x, 'dtype', type(x).__name__)}")
    if not x.flags.writeable:
        raise InvalidArgumentError("gradient checks perturb x in place: it must be writeable")
    grad = np.zeros(x.shape)
    # index x itself (a strided view included): a flattened copy would be perturbed where f cannot see it
    for i in np.ndindex(x.shape):
        saved = x[i]
        x[i] = saved + eps
        f_plus = float(f())
        x[i] = saved - eps
        f_minus = float(f())
        x[i] = saved
        grad[i] = (f_plus - f_minus) / (2 * eps)
    return grad


def relative_error(analytic, numeric):
    """|a - n| / max(|a| + |n|, tiny) with Euclidean norms over the whole array (0 when both are 0)."""
    analytic, numeric = np.asarray(analytic, np.float64), np.asarray(numeric, np.float64)
    denominator = np.linalg.norm(analytic) + np.linalg.norm(numeric)
    if denominator == 0:
        return 0.0
    return float(np.linalg.norm(analytic - numeric) / max(denominator, 1e-300))


def gradcheck(f, inputs, analytic, eps=1e-6):
    """Compare analytic gradients with centred differences.

    Args:
        f: callable () -> float, the loss as a function of the arrays in `inputs` (read at call time).
        inputs: {name: float64 array} that f depends on.
        analytic: {name: array}, the gradients to check, same keys and shapes.

    Returns:
        {name: relative error}.
    """
    errors = {}
    for name, x in inputs.items():
        numeric = numerical_gradient(f, x, eps)
        if np.shape(analytic[name]) != x.shape:
            raise InvalidArgumentError(f"analytic gradient {name} has shape {np.shape(analytic[name])}, expected {x.shape}")
        errors[name] = relative_error(analytic[name], numeric)
    return errors


def gradcheck_layer(layer, x, rng, eps=1e-6):
    """Check a layer's (or a whole network's) backward against centred differences.

    The scalar checked is L = sum(layer.forward(x) * r) for a fixed random r, so dL/dy = r. The layer
    must compute the same function at every call: a `Dropout` in training mode draws a new mask per
    forward pass, which would make the differences meaningless (check it in eval mode, or with a
    fixed mask); two forward passes that differ raise an error.

    Args:
        layer: a float64 layer (e.g. `nn.Sequential(...).astype(np.float64)`).
        x: float64 input; rng: numpy Generator for r.

    Returns:
        {"input": error, "<param name>": error, ...}.
    """
    y = np.array(layer.forward(x))
    if not np.array_equal(y, layer.forward(x), equal_nan=True):
        raise InvalidArgumentError(
            "gradient checks need a layer that computes the same output at every call; two forward passes "
            "differ (a Dropout in training mode draws a new mask each time: check it in eval mode)"
        )
    r = rng.standard_normal(y.shape)

    def loss():
        return float(np.sum(layer.forward(x) * r))

    layer.forward(x)
    analytic = {"input": layer.backward(r.copy())}
    params = {"input": x}
    for name, owner, key in layer.named_parameters():
        analytic[name] = np.array(owner.grads[key])
        params[name] = owner.params[key]
    return gradcheck(loss, params, analytic, eps)


def gradcheck_model(model, total_loss, rng, per_tensor=8, eps=1e-6, floor=1e-300):
    """Check a whole model's training step: the gradients that `total_loss()` (forward, loss and
    backward, returning the loss as a float) leaves in every parameter's `grads`, against centred
    differences of that loss, on up to `per_tensor` random entries of each parameter.

    The error of a parameter is |a - n| / max(|a| + |n|, floor) over its sampled entries; a floor
    (e.g. 1e-3) keeps a parameter whose gradient is almost zero (a unit ReLU switches off for every
    sample) from reporting rounding noise as error. Build the model in float64.

    Returns:
        ({parameter name: error}, {parameter name: analytic gradient array}).
    """
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    total_loss()
    analytic = {name: np.array(layer.grads[key]) for name, layer, key in model.named_parameters()}
    errors = {}
    for name, layer, key in model.named_parameters():
        flat = layer.params[key].reshape(-1)  # a view: perturbing it perturbs the parameter
        entries = np.arange(flat.size) if flat.size <= per_tensor else rng.choice(flat.size, per_tensor, replace=False)
        numeric = np.empty(len(entries))
        for j, i in enumerate(entries):
            saved = flat[i]
            flat[i] = saved + eps
            plus = total_loss()
            flat[i] = saved - eps
            minus = total_loss()
            flat[i] = saved
            numeric[j] = (plus - minus) / (2 * eps)
        a = analytic[name].reshape(-1)[entries]
        errors[name] = float(np.linalg.norm(a - numeric) / max(np.linalg.norm(a) + np.linalg.norm(numeric), floor))
    return errors, analytic
