"""Scalar logic of the region-proposal kernels, written once for the CPU and the GPU.

Every function here is plain Python on scalars (or on one element of an array) with no decorator:
`scratchdet.kernels.cpu.proposals` compiles each with ``numba.njit`` and
`scratchdet.kernels.cuda.proposals` with ``numba.cuda.jit(device=True)``, so the two backends cannot
disagree on a colour conversion, a boundary rule or a histogram bin. The functions do not call each
other (a plain function cannot call another plain function once compiled for a device), so each
one is a leaf. The convolution loops themselves live in the kernels, which share the boundary
rule `reflect_index`.

Conventions: colour channels are float values on a 0..255 scale; images are indexed
``image[row, col, channel]``.
"""

import math

# Colour spaces of Selective Search (Uijlings et al. 2013, Table 1), by integer code.
RGB, HSV, LAB, RGI, INTENSITY, HUE = 0, 1, 2, 3, 4, 5
COLOUR_SPACE_CODES = {"rgb": RGB, "hsv": HSV, "lab": LAB, "rgi": RGI, "i": INTENSITY, "h": HUE}


def rgb_to_hsv(r, g, b):
    """One pixel RGB (each 0..255) -> (hue, saturation, value), each scaled to 0..255.

    Hue is the usual hexcone angle in [0, 360) degrees scaled by 255/360; grey pixels get hue 0.
    """
    v = max(r, g, b)
    m = min(r, g, b)
    delta = v - m
    s = 255.0 * delta / v if v > 0.0 else 0.0
    if delta <= 0.0:
        h = 0.0
    elif v == r:
        h = 60.0 * (g - b) / delta
    elif v == g:
        h = 120.0 + 60.0 * (b - r) / delta
    else:
        h = 240.0 + 60.0 * (r - g) / delta
    if h < 0.0:
        h += 360.0
    return h * (255.0 / 360.0), s, v


def srgb_to_linear(c):
    """Undo the sRGB gamma of one channel value on 0..255: returns linear light in [0, 1]."""
    c = c / 255.0
    return c / 12.92 if c <= 0.04045 else math.pow((c + 0.055) / 1.055, 2.4)


def linear_rgb_to_lab(rl, gl, bl):
    """One pixel of linear RGB (each in [0, 1]) -> CIE L*a*b* (D65) on OpenCV's 8-bit scale.

    L* in [0, 100] becomes ``L * 255 / 100``; a* and b* are offset by 128, as in OpenCV's
    COLOR_RGB2Lab. Feed it `srgb_to_linear` of each channel.
    """
    # 1. linear RGB -> XYZ, normalised by the D65 white point
    x = (0.412453 * rl + 0.357580 * gl + 0.180423 * bl) / 0.950456
    y = 0.212671 * rl + 0.715160 * gl + 0.072169 * bl
    z = (0.019334 * rl + 0.119193 * gl + 0.950227 * bl) / 1.088754
    # 2. the cube-root compression f(t), linear near zero
    fx = math.pow(x, 1.0 / 3.0) if x > 0.008856 else 7.787 * x + 16.0 / 116.0
    fy = math.pow(y, 1.0 / 3.0) if y > 0.008856 else 7.787 * y + 16.0 / 116.0
    fz = math.pow(z, 1.0 / 3.0) if z > 0.008856 else 7.787 * z + 16.0 / 116.0
    lightness = 116.0 * fy - 16.0 if y > 0.008856 else 903.3 * y
    return lightness * 2.55, 500.0 * (fx - fy) + 128.0, 200.0 * (fy - fz) + 128.0


def rgb_to_rgi(r, g, b):
    """One pixel RGB -> (normalised r, normalised g, intensity), each on 0..255.

    ``r = R / (R + G + B)`` (1/3 for a black pixel), ``I = (R + G + B) / 3``.
    """
    total = r + g + b
    if total <= 0.0:
        return 85.0, 85.0, 0.0
    return 255.0 * r / total, 255.0 * g / total, total / 3.0


def rgb_to_intensity(r, g, b):
    """One pixel RGB -> luma intensity ``0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601)."""
    return 0.299 * r + 0.587 * g + 0.114 * b


def reflect_index(i, n):
    """Index `i` folded into ``[0, n)`` by half-sample reflection (``d c b a | a b c d | d c b a``).

    The boundary rule of ``scipy.ndimage``'s default ``mode="reflect"``.
    """
    if n == 1:
        return 0
    period = 2 * n
    i = i % period
    if i < 0:
        i += period
    return i if i < n else period - 1 - i


def edge_weight(image, i0, j0, i1, j1):
    """Felzenszwalb-Huttenlocher edge weight: the Euclidean colour distance between two pixels.

    ``w = || image[i0, j0, :] - image[i1, j1, :] ||_2`` (Felzenszwalb and Huttenlocher 2004, sec. 4.1
    for colour images taken as one vector per pixel).
    """
    acc = 0.0
    for c in range(image.shape[2]):
        d = image[i0, j0, c] - image[i1, j1, c]
        acc += d * d
    return math.sqrt(acc)


def oriented_derivative(gx, gy, orientation):
    """Half-wave rectified derivative in one of eight orientations (multiples of 45 degrees).

    The Gaussian derivative is steerable: along angle theta it is ``cos(theta) gx + sin(theta) gy``.
    Orientations 0..3 keep its positive part at 0, 45, 90, 135 degrees; 4..7 the positive part at
    180..315 degrees, i.e. the negative part of 0..3. Returns a value >= 0.
    """
    o = orientation % 4
    if o == 0:
        d = gx
    elif o == 1:
        d = 0.7071067811865476 * (gx + gy)
    elif o == 2:
        d = gy
    else:
        d = 0.7071067811865476 * (gy - gx)
    if orientation >= 4:
        d = -d
    return d if d > 0.0 else 0.0


def histogram_bin(value, scale, nbins):
    """The bin ``floor(value * scale)`` of `value` among `nbins` bins, clipped to ``[0, nbins)``.

    With ``scale = nbins / upper`` the bins split ``[0, upper]`` evenly; the top edge goes in the
    last bin. A scale of 0 (an all-zero channel) puts everything in bin 0.
    """
    b = int(value * scale)
    if b < 0:
        return 0
    return b if b < nbins else nbins - 1
