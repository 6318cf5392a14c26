"""Layers: objects that hold parameters and call the forward / backward pairs of `scratchdet.nn.functional`.

A layer keeps `params` and `grads`, two dicts with the same keys and shapes. `forward(x)` returns the
output and remembers what `backward` needs; `backward(dy)` returns dx and overwrites `grads` (gradients
are not accumulated across calls); `backward(dy, input_grad=False)` fills `grads` only and returns
None, skipping the work dx takes (a network's first layer: its input is data, which needs no
gradient). Layers do no array math themselves, so the same code runs on NumPy arrays and on CUDA
device arrays (`layer.to("cuda")`).
"""

import math

import numpy as np

from scratchdet.backend import is_cuda_array, to_device, to_host, zeros_like
from scratchdet.errors import DataFormatError, InvalidArgumentError
from scratchdet.nn import functional as F

INITS = ("he", "xavier")


def as_generator(rng):
    """A `numpy.random.Generator` from a Generator or an integer seed (no global random state)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise InvalidArgumentError(f"rng must be a numpy.random.Generator or an integer seed, got {rng!r}")


def check_size(name, value, minimum=1):
    """A layer size (channels, features, kernel side, stride, padding) as an int >= `minimum`, or an
    `InvalidArgumentError` naming the argument (a float such as 2.5 is not silently truncated)."""
    return F._check_positive_int(name, value, minimum)


def square_kernel_size(value):
    """`kernel_size` of a square kernel: an int, or a pair of equal ints, -> int >= 1."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2 or value[0] != value[1]:
            raise InvalidArgumentError(
                f"kernel_size must be an int or a pair of equal ints (square kernels only), got {value!r}"
            )
        value = value[0]
    return check_size("kernel_size", value)


def init_weight(shape, fan_in, fan_out, init, rng, dtype):
    """Random initial weights for a layer with `fan_in` inputs and `fan_out` outputs per unit: an array
    of `shape` (e.g. (K, C, k, k) or (D_out, D_in)) in `dtype` (float32 or float64), drawn from `rng`
    (a `numpy.random.Generator`).

    - "he" (He et al. 2015, eq. 10): normal with std sqrt(2 / fan_in), for layers followed by ReLU.
    - "xavier" (Glorot and Bengio 2010, eq. 16): uniform in +-sqrt(6 / (fan_in + fan_out)).
    """
    if np.dtype(dtype) not in F.FLOAT_DTYPES:
        raise InvalidArgumentError(f"dtype must be float32 or float64, got {np.dtype(dtype)}")
    if init == "he":
        weight = rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)
    elif init == "xavier":
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        weight = rng.uniform(-limit, limit, size=shape)
    else:
        raise InvalidArgumentError(f"init must be one of {INITS}, got {init!r}")
    return weight.astype(dtype)


class Layer:
    """Base class: parameters, gradients, train / eval mode, device and dtype moves, configuration."""

    def __init__(self):
        self.params = {}
        self.grads = {}
        self.training = True
        self.device = "cpu"

    # -- the interface every layer implements -------------------------------------------------------
    def forward(self, x):
        """Return the layer's output for input `x` (a NumPy or CUDA device array; shapes in each
        layer's docstring) and keep what `backward` needs."""
        raise NotImplementedError

    def backward(self, dy, input_grad=True):
        """Given dL/dy (shaped like the last `forward` output), fill `grads` and return dL/dx
        (shaped like the last `forward` input), or None when `input_grad` is False."""
        raise NotImplementedError

    def config(self):
        """The constructor arguments as a JSON-ready dict (without `rng`); `nn.save` stores it."""
        return {}

    def _saved(self, name):
        """What `forward` kept for `backward` (e.g. its input), or a clear error if forward never ran."""
        value = getattr(self, name, None)
        if value is None:
            raise InvalidArgumentError(f"{type(self).__name__}.backward called before forward")
        return value

    # -- shared behaviour ---------------------------------------------------------------------------
    def __call__(self, x):
        return self.forward(x)

    def train(self):
        """Training mode (dropout drops). Returns self."""
        self.training = True
        return self

    def eval(self):
        """Evaluation mode (dropout is the identity). Returns self."""
        self.training = False
        return self

    def named_parameters(self, prefix=""):
        """Yield (name, layer, key) for each parameter: `layer.params[key]` and `layer.grads[key]`."""
        for key in self.params:
            yield prefix + key, self, key

    def has_params(self):
        """Whether the layer (or a layer inside it) has parameters."""
        return next(self.named_parameters(), None) is not None

    def to(self, device):
        """Move parameters and gradients to "cpu" or "cuda" (Numba device arrays). Returns self."""
        for key in self.params:
            self.params[key] = to_device(self.params[key], device)
            self.grads[key] = to_device(self.grads[key], device)
        self.device = device
        return self

    def astype(self, dtype):
        """Cast parameters to float32 or float64, where they are (the cast itself on the host), with
        zero gradients. Returns self."""
        dtype = np.dtype(dtype)
        if dtype not in F.FLOAT_DTYPES:
            raise InvalidArgumentError(f"dtype must be float32 or float64, got {dtype}")
        for key, param in self.params.items():
            device = "cuda" if is_cuda_array(param) else "cpu"
            self.params[key] = to_device(np.ascontiguousarray(to_host(param), dtype=dtype), device)
            self.grads[key] = zeros_like(self.params[key])
        return self

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


class Conv2d(Layer):
    """2-D convolution, y = conv(x, weight) + bias (see `F.conv2d_forward`).

    Parameters: weight (out_channels, in_channels, k, k), bias (out_channels,), He-initialised by default.
    Input (N, in_channels, H, W) -> output (N, out_channels, H', W'), H' = 1 + (H + 2*padding - k) // stride.
    Kernels are square: `kernel_size` is an int k (or a pair (k, k)); `F.conv2d_forward` takes any
    (kh, kw) filters directly.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, *, rng, init="he", dtype=np.float32):
        super().__init__()
        self.in_channels = check_size("in_channels", in_channels)
        self.out_channels = check_size("out_channels", out_channels)
        self.kernel_size = square_kernel_size(kernel_size)
        self.stride, self.padding = check_size("stride", stride), check_size("padding", padding, 0)
        self.init = init
        fan_in = self.in_channels * self.kernel_size**2
        fan_out = self.out_channels * self.kernel_size**2
        shape = (self.out_channels, self.in_channels, self.kernel_size, self.kernel_size)
        self.params["weight"] = init_weight(shape, fan_in, fan_out, init, as_generator(rng), dtype)
        self.params["bias"] = np.zeros(self.out_channels, dtype=dtype)
        self.grads = {key: np.zeros_like(value) for key, value in self.params.items()}
        self._x = None

    def forward(self, x):
        """x: (N, in_channels, H, W) float, the weight's dtype -> y: (N, out_channels, H', W')."""
        self._x = x
        return F.conv2d_forward(x, self.params["weight"], self.params["bias"], stride=self.stride, padding=self.padding)

    def backward(self, dy, input_grad=True):
        """dy: (N, out_channels, H', W') -> dx: (N, in_channels, H, W) (None without `input_grad`);
        sets grads "weight" and "bias"."""
        dx, self.grads["weight"], self.grads["bias"] = F.conv2d_backward(
            dy, self._saved("_x"), self.params["weight"], stride=self.stride, padding=self.padding,
            input_grad=input_grad,
        )
        return dx

    def config(self):
        return {
            "in_channels": self.in_channels, "out_channels": self.out_channels, "kernel_size": self.kernel_size,
            "stride": self.stride, "padding": self.padding, "init": self.init,
        }


class Linear(Layer):
    """Fully connected layer y = x @ weight.T + bias; weight (out_features, in_features), bias (out_features,).

    Input (N, in_features) -> output (N, out_features). He initialisation by default.
    """

    def __init__(self, in_features, out_features, *, rng, init="he", dtype=np.float32):
        super().__init__()
        self.in_features = check_size("in_features", in_features)
        self.out_features = check_size("out_features", out_features)
        self.init = init
        shape = (self.out_features, self.in_features)
        self.params["weight"] = init_weight(shape, self.in_features, self.out_features, init, as_generator(rng), dtype)
        self.params["bias"] = np.zeros(self.out_features, dtype=dtype)
        self.grads = {key: np.zeros_like(value) for key, value in self.params.items()}
        self._x = None

    def forward(self, x):
        """x: (N, in_features) float, the weight's dtype -> y: (N, out_features)."""
        self._x = x
        return F.linear_forward(x, self.params["weight"], self.params["bias"])

    def backward(self, dy, input_grad=True):
        """dy: (N, out_features) -> dx: (N, in_features) (None without `input_grad`); sets grads
        "weight" and "bias"."""
        dx, self.grads["weight"], self.grads["bias"] = F.linear_backward(
            dy, self._saved("_x"), self.params["weight"], input_grad=input_grad
        )
        return dx

    def config(self):
        return {"in_features": self.in_features, "out_features": self.out_features, "init": self.init}


class ReLU(Layer):
    """y = max(x, 0), any shape."""

    def forward(self, x):
        """x: any shape, float32 or float64 -> y like x."""
        self._x = x
        return F.relu_forward(x)

    def backward(self, dy, input_grad=True):
        """dy: shaped like the last input, same dtype -> dx like dy (None without `input_grad`)."""
        x = self._saved("_x")
        return F.relu_backward(dy, x) if input_grad else None


class MaxPool2d(Layer):
    """Max pooling over kernel_size x kernel_size windows, stride defaulting to kernel_size."""

    def __init__(self, kernel_size, stride=None):
        super().__init__()
        self.kernel_size = check_size("kernel_size", kernel_size)
        self.stride = self.kernel_size if stride is None else check_size("stride", stride)

    def forward(self, x):
        """x: (N, C, H, W) float32 or float64 -> y: (N, C, H', W'), H' = 1 + (H - kernel_size) // stride."""
        self._x = x
        return F.maxpool2d_forward(x, self.kernel_size, stride=self.stride)

    def backward(self, dy, input_grad=True):
        """dy: (N, C, H', W'), x's dtype -> dx: (N, C, H, W) (None without `input_grad`)."""
        x = self._saved("_x")
        return F.maxpool2d_backward(dy, x, self.kernel_size, stride=self.stride) if input_grad else None

    def config(self):
        return {"kernel_size": self.kernel_size, "stride": self.stride}


class Flatten(Layer):
    """(N, C, H, W) -> (N, C*H*W)."""

    def forward(self, x):
        """x: (N, C, H, W) (or any (N, ...)) -> (N, C*H*W), x's dtype (a reshape)."""
        self._shape = x.shape
        return F.flatten_forward(x)

    def backward(self, dy, input_grad=True):
        """dy: (N, C*H*W) -> dx shaped like the last input (None without `input_grad`)."""
        shape = self._saved("_shape")
        return F.flatten_backward(dy, shape) if input_grad else None


class Dropout(Layer):
    """Inverted dropout with probability p in training mode, the identity in evaluation mode.

    Each training forward draws a fresh mask seed from the layer's generator, so two runs with the same
    `rng` drop the same units.
    """

    def __init__(self, p=0.5, *, rng=0):
        super().__init__()
        self.p = F.check_probability(p)
        self._rng = as_generator(rng)
        self._mask = None
        self._identity = None  # whether the last forward was the identity (None: no forward yet)

    def forward(self, x):
        """x: any shape, float32 or float64 -> y like x (x itself in evaluation mode or when p = 0)."""
        self._identity = not self.training or self.p == 0.0
        if self._identity:
            self._mask = None
            return x
        seed = int(self._rng.integers(0, 2**31))
        y, self._mask = F.dropout_forward(x, self.p, seed)
        return y

    def backward(self, dy, input_grad=True):
        """dy: shaped like the last input, same dtype -> dx like dy (dy itself if forward was the
        identity; None without `input_grad`)."""
        identity = self._saved("_identity")
        if not input_grad:
            return None
        return dy if identity else F.dropout_backward(dy, self._mask)

    def config(self):
        return {"p": self.p}


class RoIPool(Layer):
    """RoI max pooling (Fast R-CNN, section 2.1): features (B, C, H, W) and rois (R, 5) rows
    (batch_index, x1, y1, x2, y2) in image pixels -> (R, C, PH, PW). See `F.roi_pool_forward`.

    `forward(features, rois)` takes two inputs; `backward(dy)` returns the features' gradient only.
    """

    def __init__(self, output_size, spatial_scale):
        super().__init__()
        self.output_size = F.pair(output_size, "output_size")
        self.spatial_scale = F.check_spatial_scale(spatial_scale)

    def forward(self, features, rois):
        """features: (B, C, H, W) float32 or float64; rois: (R, 5) float (batch_index, x1, y1, x2, y2)
        in image pixels -> (R, C, PH, PW), features' dtype."""
        if is_cuda_array(features) and not is_cuda_array(rois):
            # host RoIs (from proposals) are checked and copied to the GPU once, for forward and backward
            rois = to_device(F.check_host_rois(rois, features.shape[0], self.spatial_scale), "cuda")
        self._features, self._rois = features, rois
        return F.roi_pool_forward(features, rois, self.output_size, self.spatial_scale)

    def __call__(self, features, rois):
        return self.forward(features, rois)

    def backward(self, dy, input_grad=True):
        """dy: (R, C, PH, PW), features' dtype -> dfeatures: (B, C, H, W) (None without `input_grad`)."""
        features, rois = self._saved("_features"), self._saved("_rois")
        return F.roi_pool_backward(dy, features, rois, self.output_size, self.spatial_scale) if input_grad else None

    def config(self):
        return {"output_size": list(self.output_size), "spatial_scale": self.spatial_scale}


class Sequential(Layer):
    """A chain of layers: forward runs them in order, backward in reverse (the chain rule).

    Parameters are named "<index>.<key>", e.g. "0.weight" for the first layer's weight.
    """

    def __init__(self, *layers):
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        for layer in layers:
            if not isinstance(layer, Layer):
                raise InvalidArgumentError(f"Sequential takes layers, got {type(layer).__name__}")
        self.layers = list(layers)

    def forward(self, x):
        """x: the first layer's input -> the last layer's output (shapes and dtypes in each layer)."""
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dy, input_grad=True):
        """dy: shaped like the last forward output -> dx shaped like the last forward input.

        With `input_grad` False it returns None and stops at the first layer that has parameters,
        which is asked for its parameters' gradients only: the layers before it have no gradients
        to fill, and the network's input (data) needs no gradient. A net whose first layer is a
        convolution then skips that layer's input gradient, as PyTorch does for an input without
        `requires_grad`.
        """
        first = 0  # the first layer to run backward through
        if not input_grad:
            first = next((i for i, layer in enumerate(self.layers) if layer.has_params()), len(self.layers))
        for i in range(len(self.layers) - 1, first - 1, -1):
            dy = self.layers[i].backward(dy, input_grad=input_grad or i > first)
        return dy if input_grad else None

    def __getitem__(self, index):
        return self.layers[index]

    def __len__(self):
        return len(self.layers)

    def named_parameters(self, prefix=""):
        for i, layer in enumerate(self.layers):
            yield from layer.named_parameters(f"{prefix}{i}.")

    def train(self):
        for layer in self.layers:
            layer.train()
        self.training = True
        return self

    def eval(self):
        for layer in self.layers:
            layer.eval()
        self.training = False
        return self

    def to(self, device):
        for layer in self.layers:
            layer.to(device)
        self.device = device
        return self

    def astype(self, dtype):
        for layer in self.layers:
            layer.astype(dtype)
        return self

    def config(self):
        return {"layers": [layer_spec(layer) for layer in self.layers]}

    def __repr__(self):
        inner = "\n".join(f"  ({i}) {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential(\n{inner}\n)"


# Every layer type that `nn.save` can write and `nn.load` can rebuild, by name.
LAYER_TYPES = {cls.__name__: cls for cls in (Conv2d, Linear, ReLU, MaxPool2d, Flatten, Dropout, RoIPool, Sequential)}


def register_layer(cls):
    """Class decorator: make a model built of layers (a detector) known to `nn.save` / `nn.load` by its
    class name. The class must offer `from_config(config, dtype)`, the inverse of its `config()`."""
    if not callable(getattr(cls, "from_config", None)):
        raise InvalidArgumentError(f"{cls.__name__} needs a from_config(config, dtype) class method to be loadable")
    LAYER_TYPES[cls.__name__] = cls
    return cls


def layer_spec(layer):
    """A layer's architecture as JSON-ready data: {"type": name, **config}."""
    return {"type": type(layer).__name__, **layer.config()}


def build_layer(spec, dtype=np.float32):
    """Rebuild a layer (parameters freshly initialised from seed 0) from `layer_spec`'s output."""
    if isinstance(spec, dict) and spec.get("type") not in LAYER_TYPES:
        import scratchdet.models  # noqa: F401  (registers the detectors)
    if not isinstance(spec, dict) or spec.get("type") not in LAYER_TYPES:
        raise DataFormatError(f"unknown layer specification {spec!r}; known types: {sorted(LAYER_TYPES)}")
    kind = spec["type"]
    args = {k: v for k, v in spec.items() if k != "type"}
    try:
        if kind == "Sequential":
            return Sequential([build_layer(s, dtype) for s in args["layers"]])
        if kind in ("Conv2d", "Linear"):
            return LAYER_TYPES[kind](**args, rng=0, dtype=dtype)
        if hasattr(LAYER_TYPES[kind], "from_config"):
            return LAYER_TYPES[kind].from_config(args, dtype)
        if kind == "Dropout":
            return Dropout(**args, rng=0)
        return LAYER_TYPES[kind](**args)
    except (TypeError, KeyError, ValueError) as error:
        raise DataFormatError(f"cannot rebuild layer {kind} from {args!r}: {error}") from error
