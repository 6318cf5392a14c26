"""What every model of `scratchdet.models` shares: named sub-networks, pixels in, a conv backbone.

A model is a `Layer` made of a few named sub-networks (its `CHILDREN`): parameters are named
"<child>.<name>" (e.g. "backbone.0.weight"), and modes, device moves and `nn.save` / `nn.load` go
through the children. Each model adds `training_step(batch)` (forward, loss, backward: what
`scratchdet.train.fit` calls) and `predict`.
"""

import numbers

import numpy as np

from scratchdet.backend import to_device, to_host
from scratchdet.errors import InvalidArgumentError
from scratchdet.nn import functional as F
from scratchdet.nn.layers import Conv2d, Layer, Linear, MaxPool2d, ReLU, Sequential, as_generator

# Pixels are scaled to about zero mean and unit spread before the first convolution: (v / 255 - 0.5) / 0.25.
PIXEL_MEAN = 0.5
PIXEL_STD = 0.25


class Model(Layer):
    """A model built of named sub-networks (`CHILDREN`, in forward order)."""

    CHILDREN = ()

    def children(self):
        """The sub-networks, in forward order (`scratchdet.train.fit` walks them for dropout generators)."""
        return [getattr(self, name) for name in self.CHILDREN]

    def named_parameters(self, prefix=""):
        for name in self.CHILDREN:
            yield from getattr(self, name).named_parameters(f"{prefix}{name}.")

    def train(self):
        for child in self.children():
            child.train()
        self.training = True
        return self

    def eval(self):
        for child in self.children():
            child.eval()
        self.training = False
        return self

    def to(self, device):
        for child in self.children():
            child.to(device)
        self.device = device
        return self

    def astype(self, dtype):
        for child in self.children():
            child.astype(dtype)
        return self

    @property
    def dtype(self):
        """The parameters' dtype (float32 unless the model was built or cast otherwise)."""
        _, layer, key = next(self.named_parameters())
        return layer.params[key].dtype

    @classmethod
    def from_config(cls, config, dtype):
        """Rebuild the model from `config()` (parameters freshly initialised; `nn.load` then fills them)."""
        return cls(**config, rng=0, dtype=dtype)

    def _on_device(self, array):
        """`array` on the model's device (activations and targets must live beside the parameters)."""
        return to_device(array, self.device)

    def __repr__(self):
        inner = "\n".join(f"  ({name}) {getattr(self, name)!r}".replace("\n", "\n  ") for name in self.CHILDREN)
        return f"{type(self).__name__}(\n{inner}\n)"


class evaluation_mode:
    """`with evaluation_mode(model):` runs in evaluation mode (no dropout) and restores the mode after."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.was_training = self.model.training
        self.model.eval()
        return self.model

    def __exit__(self, *exc):
        if self.was_training:
            self.model.train()


def images_to_input(images, dtype=np.float32):
    """Pixels to the network's input: (H, W, 3) or (N, H, W, 3) uint8 RGB -> (N, 3, H, W) `dtype`,
    scaled as (v / 255 - PIXEL_MEAN) / PIXEL_STD."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise InvalidArgumentError(
            f"images must be (H, W, 3) or (N, H, W, 3) uint8 RGB, got shape {images.shape} dtype {images.dtype}"
        )
    real = np.dtype(dtype).type
    x = images.transpose(0, 3, 1, 2).astype(dtype)  # (N, 3, H, W)
    x *= real(1.0 / (255.0 * PIXEL_STD))
    x -= real(PIXEL_MEAN / PIXEL_STD)
    return np.ascontiguousarray(x)


def check_channels(channels):
    """`channels` as a tuple of positive ints (the conv backbone's widths), or an InvalidArgumentError."""
    try:
        channels = tuple(channels)
    except TypeError:
        raise InvalidArgumentError(f"channels must be a sequence of positive ints, got {channels!r}") from None
    if not channels or any(isinstance(c, bool) or not isinstance(c, numbers.Integral) or c < 1 for c in channels):
        raise InvalidArgumentError(f"channels must be a non-empty sequence of positive ints, got {channels!r}")
    return tuple(int(c) for c in channels)


def conv_backbone(channels, rng, dtype=np.float32):
    """A VGG-style stack: for each width c, a 3x3 convolution (padding 1) and ReLU, with a 2x2 max
    pooling between stages (none after the last, where Fast R-CNN puts its RoI pooling).

    Input (N, 3, H, W) -> (N, channels[-1], H / s, W / s) with stride s = 2 ** (len(channels) - 1).
    Returns (Sequential, s).
    """
    rng = as_generator(rng)
    layers, previous = [], 3
    for i, width in enumerate(channels):
        if i:
            layers.append(MaxPool2d(2))
        layers += [Conv2d(previous, width, 3, padding=1, rng=rng, dtype=dtype), ReLU()]
        previous = width
    return Sequential(layers), 2 ** (len(channels) - 1)


def small_normal_linear(in_features, out_features, std, rng, dtype=np.float32):
    """A Linear layer (in_features -> out_features; weight (out_features, in_features)) with weights
    from N(0, std**2) and zero bias: Fast R-CNN (Girshick 2015, section 2.3) starts its classifier at
    std 0.01 and its box regressor at std 0.001."""
    layer = Linear(in_features, out_features, rng=rng, dtype=dtype)
    layer.params["weight"] = (as_generator(rng).standard_normal((out_features, in_features)) * std).astype(dtype)
    return layer


def softmax(scores):
    """Row-wise softmax of (N, K) host or device scores, on the host in float64: (N, K) probabilities."""
    scores = to_host(scores).astype(np.float64)
    scores -= scores.max(axis=1, keepdims=True) if scores.size else 0.0
    e = np.exp(scores)
    return e / e.sum(axis=1, keepdims=True)


def fork_backward(heads_and_grads):
    """Backward through several heads that read one input: the input's gradient is the sum of what
    each head returns (`F.add`). heads_and_grads: [(layer, dy)] -> d input."""
    total = None
    for layer, dy in heads_and_grads:
        dx = layer.backward(dy)
        total = dx if total is None else F.add(total, dx)
    return total


def check_classes(classes):
    """The object class names as a tuple of str (the background is not among them)."""
    if isinstance(classes, str) or not hasattr(classes, "__iter__"):
        raise InvalidArgumentError(f"classes must be a sequence of class names, got {classes!r}")
    classes = tuple(str(c) for c in classes)
    if not classes or len(set(classes)) != len(classes):
        raise InvalidArgumentError(f"classes must be non-empty and without repeats, got {classes!r}")
    return classes


def check_image(image):
    """`image` as an (H, W, 3) uint8 RGB array with H, W >= 1, or an InvalidArgumentError."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or 0 in image.shape:
        raise InvalidArgumentError(
            f"image must be (H, W, 3) uint8 RGB with H, W >= 1, got shape {image.shape} dtype {image.dtype}"
        )
    return image
