"""Scalar logic of the conv-net kernels, shared by the CPU and the CUDA kernels.

Each function works on plain numbers (or reads one window of an array) and calls no other Python
function, so that it compiles both as a `numba.njit` function (`scratchdet.kernels.cpu.nn`) and as a
`numba.cuda.jit(device=True)` device function (`scratchdet.kernels.cuda.nn`): the two backends cannot
disagree on the smooth-L1 kink, on a max-pooling window's or a RoI bin's maximum and which input wins it, on how a RoI is rounded onto
the feature map, or on which units dropout keeps.
"""

import math


def smooth_l1_value(x, beta):
    """Smooth L1 of one residual x (Fast R-CNN, Girshick 2015, eq. 3; PyTorch's `beta` form).

        smooth_l1(x) = 0.5 * x**2 / beta   if |x| < beta
                       |x| - 0.5 * beta    otherwise

    beta = 1 is the paper's function; beta = 0 is the plain L1 loss |x| (as in PyTorch).
    """
    ax = abs(x)
    if ax < beta:
        return 0.5 * x * x / beta
    return ax - 0.5 * beta


def smooth_l1_grad(x, beta):
    """Derivative of `smooth_l1_value` with respect to x: x / beta inside the kink, sign(x) outside."""
    if abs(x) < beta:
        return x / beta
    if x > 0:
        return 1.0
    if x < 0:
        return -1.0
    return 0.0


def round_half_away(v):
    """Round to the nearest integer, halves away from zero (C's `round`, which torchvision uses).

    NumPy and Python round halves to even (`round(2.5) == 2`); RoI pooling follows C (`3`).
    """
    if v >= 0.0:
        return math.floor(v + 0.5)
    return -math.floor(-v + 0.5)


def window_max(x, n, c, y0, y1, x0, x1):
    """The maximum of one window of x (N, C, H, W), ``x[n, c, y0:y1, x0:x1]``, not empty: the value
    `window_argmax` points at.

    The window is a max-pooling window (y1 = y0 + kernel_size) or a RoI pooling bin; a NaN in it wins,
    as in `window_argmax`. Kept apart from `window_argmax` because a plain running maximum compiles to
    faster code (max pooling forward + backward, 64x64x32x32: 4.4 ms against 5.5 ms with the forward
    going through `window_argmax`, before NaNs were looked for; RoI pooling forward, 256 RoIs of 7 x 7
    bins over 512 channels: 20.8 ms against 28.9 ms, on the 2-core VM).
    """
    best = x[n, c, y0, x0]
    poison = best - best  # the window's sum, offset: NaN if the window holds a NaN (or +inf and -inf)
    for y in range(y0, y1):
        for x_ in range(x0, x1):
            v = x[n, c, y, x_]
            if v > best:
                best = v
            poison += v
    if poison != poison:  # rare: look for a NaN, which wins (see `window_argmax`)
        for y in range(y0, y1):
            for x_ in range(x0, x1):
                v = x[n, c, y, x_]
                if v != v:
                    return v
    return best


def window_argmax(x, n, c, y0, y1, x0, x1):
    """(row, column) of the maximum of one window of x (N, C, H, W): ``x[n, c, y0:y1, x0:x1]``, not empty.

    The window is a max-pooling window (y1 = y0 + kernel_size) or a RoI pooling bin. It is scanned
    row by row; on ties the first maximum wins, and a NaN wins over any number (the last NaN of the
    window), as in PyTorch's max pooling: a NaN activation reaches the loss rather than vanishing in
    the pooling. The forward pass reads the window's value there, the backward pass routes the
    window's gradient there. (NaNs are looked for only when the window holds a NaN or an infinity,
    which `poison` tells without a branch per element: the common case keeps its plain running
    maximum.)
    """
    best_y = y0
    best_x = x0
    best = x[n, c, y0, x0]
    poison = best - best
    for y in range(y0, y1):
        for x_ in range(x0, x1):
            v = x[n, c, y, x_]
            if v > best:
                best = v
                best_y = y
                best_x = x_
            poison += v
    if poison != poison:
        for y in range(y0, y1):
            for x_ in range(x0, x1):
                v = x[n, c, y, x_]
                if v != v:
                    best_y = y
                    best_x = x_
    return best_y, best_x


def relu_passes(x):
    """Whether ReLU lets x (and its gradient) through: x > 0, or x is NaN, which stays NaN as in
    PyTorch (a NaN activation reaches the loss rather than turning into 0; max pooling keeps NaNs too)."""
    return not x <= 0


def max_of_four(a, b, c, d):
    """`window_max` of a 2 x 2 window read row by row (a b / c d), without the loops: the maximum, or
    a NaN if the window holds one."""
    top = b if b > a or b != b else a  # a NaN wins each comparison
    bottom = d if d > c or d != d else c
    return bottom if bottom > top or bottom != bottom else top


def winner_of_four(a, b, c, d):
    """Which element of a 2 x 2 window (a b / c d: 0 to 3, row by row) `window_argmax` picks, without
    the loops: the first maximum, or the last NaN if the window holds one."""
    winner = 1 if b > a else 0  # selects rather than branches: they compile branch-free
    best = b if b > a else a
    winner = 2 if c > best else winner
    best = c if c > best else best
    winner = 3 if d > best else winner
    # a NaN compares false above, so it never won: the last one does now
    winner = 0 if a != a else winner
    winner = 1 if b != b else winner
    winner = 2 if c != c else winner
    return 3 if d != d else winner


def roi_bin_start(bin_index, bin_size, roi_start, limit):
    """First feature-map cell of bin `bin_index` of a RoI, clipped to [0, limit] (torchvision's rule).

    The RoI starts at cell `roi_start` and its bins are `bin_size` cells long (a float):
    start = floor(bin_index * bin_size) + roi_start.
    """
    start = int(math.floor(bin_index * bin_size)) + roi_start
    return min(max(start, 0), limit)


def roi_bin_end(bin_index, bin_size, roi_start, limit):
    """One past the last cell of bin `bin_index`: ceil((bin_index + 1) * bin_size) + roi_start, clipped."""
    end = int(math.ceil((bin_index + 1) * bin_size)) + roi_start
    return min(max(end, 0), limit)


def dropout_uniform(seed, index):
    """A uniform number in [0, 1) for unit `index` of a dropout mask drawn with `seed`.

    A counter-based generator: each unit's number depends only on (seed, index), so the CPU and the
    GPU draw the same mask in any order, in parallel. Three rounds of the "lowbias32" integer hash
    (Chris Wellons' 32-bit mixing function, a bijection whose output bits each flip with about half
    of the input bits) take in the seed, then the index's low 32 bits, then its high bits, so that
    neighbouring seeds give unrelated masks (with the seed merely added to the index, seed s + 1's
    mask was seed s's shifted by a fixed number of units) and the numbers do not repeat after 2**32
    units. Needs 0 <= seed < 2**31, 0 <= index < 2**40.
    """
    h = (seed + 0x9E3779B9) & 0xFFFFFFFF  # the golden-ratio constant: seed 0 is not the hash's fixed point 0
    for word in (0, index & 0xFFFFFFFF, (index >> 32) & 0xFFFFFFFF):  # the seed alone, then the index's two halves
        h ^= word
        h = h ^ (h >> 16)
        h = (h * 0x7FEB352D) & 0xFFFFFFFF
        h = h ^ (h >> 15)
        # times 0x846CA68B, written as that minus 2**32 (the same low 32 bits): h < 2**32 times a
        # constant above 2**31 would pass 2**63, which a compiler may take for impossible
        h = (h * -0x7B935975) & 0xFFFFFFFF
        h = h ^ (h >> 16)
    return h / 4294967296.0


def sgd_element(param, grad, velocity, k, lr, momentum, weight_decay):
    """Element k of one SGD step with momentum and L2 weight decay, in place (PyTorch's `SGD`, no
    dampening): g = grad + weight_decay * param;  velocity = momentum * velocity + g;  param -= lr * velocity."""
    g = grad[k] + weight_decay * param[k]
    velocity[k] = momentum * velocity[k] + g
    param[k] -= lr * velocity[k]


def adam_element(param, grad, m, v, k, correction1, correction2, lr, beta1, beta2, eps, weight_decay):
    """Element k of one Adam step (Kingma and Ba 2015, Algorithm 1) with L2 weight decay added to the
    gradient (PyTorch's `Adam`), in place; correction1, correction2 = 1 - beta1**step, 1 - beta2**step:

        g = grad + weight_decay * param;  m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
        param -= lr * (m / correction1) / (sqrt(v / correction2) + eps)
    """
    g = grad[k] + weight_decay * param[k]
    m[k] = beta1 * m[k] + (1.0 - beta1) * g
    v[k] = beta2 * v[k] + (1.0 - beta2) * g * g
    param[k] -= lr * (m[k] / correction1) / (math.sqrt(v[k] / correction2) + eps)
