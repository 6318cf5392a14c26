"""Conv nets from scratch: layers with forward and backward, losses, optimisers, saving and loading.

Read in this order: `functional` (the math of each operation, forward beside backward), `layers`
(objects holding parameters), `losses` (cross-entropy, L2, smooth L1, Fast R-CNN's multi-task loss),
`optim` (SGD, Adam, step schedule), `serialize` (.npz weights) and `gradcheck` (numerical checks).
"""

from scratchdet.nn import functional
from scratchdet.nn.gradcheck import gradcheck, gradcheck_layer, gradcheck_model, numerical_gradient, relative_error
from scratchdet.nn.layers import (
    Conv2d,
    Dropout,
    Flatten,
    Layer,
    Linear,
    MaxPool2d,
    ReLU,
    RoIPool,
    Sequential,
)
from scratchdet.nn.losses import (
    MultiTaskLoss,
    box_regression_loss,
    l2_loss,
    multitask_loss,
    regression_loss,
    smooth_l1,
    softmax_cross_entropy,
)
from scratchdet.nn.optim import SGD, Adam, StepLR
from scratchdet.nn.serialize import load, read_metadata, save

__all__ = [
    "SGD", "Adam", "Conv2d", "Dropout", "Flatten", "Layer", "Linear", "MaxPool2d", "MultiTaskLoss",
    "ReLU", "RoIPool", "Sequential", "StepLR", "box_regression_loss", "functional", "gradcheck",
    "gradcheck_layer", "gradcheck_model", "l2_loss", "load", "multitask_loss", "numerical_gradient", "read_metadata",
    "regression_loss", "relative_error", "save", "smooth_l1", "softmax_cross_entropy",
]
