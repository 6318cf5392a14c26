"""The exhaustive baseline of region proposals: every window over a grid of sizes, shapes and positions.

A sliding-window detector scores all of them (Dalal and Triggs 2005; OverFeat). Counting them shows
why proposals matter: reaching the recall that Selective Search gets with its first 2,000 boxes takes
about ten times as many windows, and the recall of all its boxes (about 5,800) more than 150,000
(`benchmarks/bench_proposals.py` on 20 coco128 photographs; Uijlings et al. 2013, sec. 1; Hosang et
al. 2016).
"""

import math
import numbers

import numpy as np

from scratchdet.errors import InvalidArgumentError

DEFAULT_SIZES = (32, 64, 128, 256)
DEFAULT_RATIOS = (0.5, 1.0, 2.0)
FLOAT32_EXACT = 2**24  # float32 holds every integer up to this, and not all beyond


def _positive_numbers(name, values):
    """`values` (one number or a non-empty sequence of them) as a tuple of finite floats > 0.

    An empty sequence is refused: it would silently give no windows at all."""
    if isinstance(values, numbers.Real):
        values = (values,)
    if isinstance(values, (str, bytes)):  # (a sequence of characters: "32" read as ("3", "2"))
        raise InvalidArgumentError(f"{name} must be a number or a sequence of numbers, got {values!r}")
    try:
        values = tuple(values)
    except TypeError:
        raise InvalidArgumentError(f"{name} must be a number or a sequence of numbers, got {values!r}") from None
    if not values:
        raise InvalidArgumentError(f"{name} must hold at least one number, got an empty sequence")
    for v in values:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real) or not 0 < v < math.inf:
            raise InvalidArgumentError(f"{name} must be finite numbers > 0, got {values!r}")
    return tuple(float(v) for v in values)


def _round_half_up(x):
    """The nearest integer to x >= 0, halves up. (Python's `round` takes a half to the even neighbour:
    at stride 0.5 a 5-pixel window would move 2 pixels, a 7-pixel one 4.)"""
    return int(math.floor(x + 0.5))


def _window_grid(image_shape, sizes, ratios, stride):
    """Validated (height, width) and the list of (window_w, window_h, step_x, step_y) that fit."""
    if isinstance(image_shape, str) or not hasattr(image_shape, "__len__") or len(image_shape) < 2:
        raise InvalidArgumentError(f"image_shape must be (H, W) or (H, W, C), got {image_shape!r}")
    for side in image_shape[:2]:
        if isinstance(side, (bool, np.bool_)) or not isinstance(side, numbers.Integral) or side < 1:
            raise InvalidArgumentError(f"image_shape must hold two integers >= 1 first, got {image_shape!r}")
    height, width = int(image_shape[0]), int(image_shape[1])
    if isinstance(stride, (bool, np.bool_)) or not isinstance(stride, numbers.Real) or not 0.0 < stride <= 1.0:
        raise InvalidArgumentError(f"stride must be a fraction of the window size in (0, 1], got {stride!r}")
    sizes = _positive_numbers("sizes", sizes)
    ratios = _positive_numbers("ratios", ratios)
    grid = []
    for size in sizes:
        for ratio in ratios:
            # a window of area size^2 whose height / width is `ratio`
            exact_w, exact_h = size / math.sqrt(ratio), size * math.sqrt(ratio)
            if exact_w >= width + 1 or exact_h >= height + 1:
                continue  # wider or taller than the image however it rounds (this skips infinite sides too)
            window_w = max(1, _round_half_up(exact_w))
            window_h = max(1, _round_half_up(exact_h))
            if window_w > width or window_h > height:
                continue
            step_x = max(1, _round_half_up(stride * window_w))
            step_y = max(1, _round_half_up(stride * window_h))
            grid.append((window_w, window_h, step_x, step_y))
    return height, width, grid


def count_sliding_windows(image_shape, sizes=DEFAULT_SIZES, ratios=DEFAULT_RATIOS, stride=0.5):
    """How many windows `sliding_windows` returns, without building them.

    For a window w x h moved by (sx, sy): ``((W - w) // sx + 1) * ((H - h) // sy + 1)`` positions.
    """
    height, width, grid = _window_grid(image_shape, sizes, ratios, stride)
    return sum(((width - w) // sx + 1) * ((height - h) // sy + 1) for w, h, sx, sy in grid)


def sliding_windows(image_shape, sizes=DEFAULT_SIZES, ratios=DEFAULT_RATIOS, stride=0.5):
    """Every window of every size and aspect ratio at every position that fits inside the image.

    Args:
        image_shape: (H, W) or (H, W, C).
        sizes: window sides in pixels (one number or several); a window of size s has area s^2.
        ratios: aspect ratios height / width (one number or several) (a window is ``s / sqrt(r)`` wide, ``s sqrt(r)`` tall).
        stride: the step between positions as a fraction of the window's width (x) and height (y);
            0.5 lets neighbours overlap by half.

    Returns:
        (N, 4) float32 xyxy in pixels, grouped by size then ratio, each group in raster order;
        windows larger than the image are left out. Sizes or ratios that round to the same window
        give it once for each (`count_sliding_windows` counts them all).
    """
    height, width, grid = _window_grid(image_shape, sizes, ratios, stride)
    if max(height, width) > FLOAT32_EXACT:
        raise InvalidArgumentError(
            f"image_shape {image_shape!r}: float32 boxes hold whole pixel coordinates exactly only up to 2**24; "
            "count the windows with count_sliding_windows"
        )
    blocks = [np.zeros((0, 4), dtype=np.float32)]
    for w, h, sx, sy in grid:
        xs = np.arange(0, width - w + 1, sx, dtype=np.float32)  # (nx,)
        ys = np.arange(0, height - h + 1, sy, dtype=np.float32)  # (ny,)
        x1, y1 = np.meshgrid(xs, ys)  # (ny, nx) each
        block = np.stack([x1.ravel(), y1.ravel(), x1.ravel() + w, y1.ravel() + h], axis=1)  # (ny*nx, 4)
        blocks.append(block)
    return np.concatenate(blocks).astype(np.float32, copy=False)
