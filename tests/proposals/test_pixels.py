"""The per-pixel stages of Selective Search behind `scratchdet.proposals.pixels`, on the CPU."""

import numpy as np
import pytest

from scratchdet.errors import InvalidArgumentError
from scratchdet.kernels.cpu import proposals as kernels
from scratchdet.proposals import pixels


@pytest.mark.parametrize("colour_space", ["rgb", "hsv", "lab", "rgi", "i", "h"])
def test_convert_colour_is_the_kernel_on_a_contiguous_copy(rng, colour_space):
    rgb = rng.integers(0, 256, size=(6, 7, 3), dtype=np.uint8)
    code = pixels._space_code(colour_space)
    np.testing.assert_array_equal(pixels.convert_colour(rgb[:, ::-1], colour_space),
                                  kernels.convert_colour(np.ascontiguousarray(rgb[:, ::-1]), code))


@pytest.mark.parametrize(
    "rgb",
    [np.full((4, 5, 3), 1000, np.uint16), np.zeros((4, 5, 3), np.float32), np.zeros((4, 5)), np.zeros((4, 5, 2), np.uint8)],
    ids=["uint16-beyond-the-lookup-table", "float", "greyscale", "two-channels"],
)
def test_convert_colour_rejects_what_is_not_rgb_uint8(rgb):
    # the kernel indexes a 256-entry table with the pixel values and reads three channels, unchecked
    with pytest.raises(InvalidArgumentError, match=r"\(H, W, 3\) uint8"):
        pixels.convert_colour(rgb, "lab")


def _bins(rng, shape=(9, 10)):
    image = (rng.random(shape + (3,)) * 255).astype(np.float32)
    gx, gy = pixels.gaussian_gradients(image, 1.0)
    return pixels.colour_bins(image), pixels.texture_bins(gx, gy)


def test_texture_orientations_are_the_rectified_halves_of_eight_directions():
    # orientations 0..3 keep the positive part of the derivative along 0, 45, 90 and 135 degrees, 4..7
    # the negative part: for (gx, gy) = (3, -1) that is 3, 1.41, 0, 0 | 0, 0, 1, 2.83, each the
    # largest of its orientation, so in the top bin (9) or, where nothing responds, in bin 0
    gx = np.array([[[3.0], [0.0]]], np.float32)  # (1, 2, 1): the second pixel is flat
    gy = np.array([[[-1.0], [0.0]]], np.float32)
    bins = pixels.texture_bins(gx, gy)
    np.testing.assert_array_equal(bins[0, 0, 0], [9, 9, 0, 0, 0, 0, 9, 9])
    np.testing.assert_array_equal(bins[0, 1, 0], np.zeros(8))


def test_region_histograms_are_normalised_per_region(rng):
    colour_bin, texture_bin = _bins(rng)
    labels = np.zeros((9, 10), np.int32)
    labels[:, 5:] = 1
    sizes, colour, texture = pixels.region_histograms(labels, 2, colour_bin, texture_bin)
    np.testing.assert_array_equal(sizes, [45, 45])
    np.testing.assert_allclose(colour.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(texture.sum(axis=1), 1.0, rtol=1e-6)


def test_region_histograms_of_a_region_without_pixels_are_zero(rng):
    # (its rows were 0 / 0: NaN)
    colour_bin, texture_bin = _bins(rng)
    labels = np.zeros((9, 10), np.int32)
    labels[:, 5:] = 2
    sizes, colour, texture = pixels.region_histograms(labels, 4, colour_bin, texture_bin)
    np.testing.assert_array_equal(sizes, [45, 0, 45, 0])
    np.testing.assert_allclose(colour.sum(axis=1), [1, 0, 1, 0], rtol=1e-6)
    np.testing.assert_allclose(texture.sum(axis=1), [1, 0, 1, 0], rtol=1e-6)


def test_region_histograms_count_past_2_to_the_24_pixels():
    """float32 counts stop growing at 2**24 (16.8 megapixels: a sky in a large photo): a one-region
    image of 4097 x 4097 pixels, all in bin 0, summed to 0.9999 instead of 1 (0.95 at 17.6 M)."""
    side = 4097  # 16,785,409 pixels > 2**24 = 16,777,216
    labels = np.zeros((side, side), np.int32)
    colour_bin = np.zeros((side, side, 1), np.uint8)
    texture_bin = np.zeros((side, side, 1, 8), np.uint8)
    sizes, colour, texture = pixels.region_histograms(labels, 1, colour_bin, texture_bin)
    assert sizes[0] == side * side and colour[0, 0] == 1.0 and texture[0, 0] == 1 / 8


@pytest.mark.parametrize(
    "n_regions, n_colour_bins, message",
    [(3, 25, "region ids 0..2"), (50, 5, "beyond its 5 bins")],
    ids=["fewer-regions-than-the-labels-name", "fewer-bins-than-the-bins-hold"],
)
def test_region_histograms_rejects_ids_and_bins_out_of_range(rng, n_regions, n_colour_bins, message):
    # the kernel indexes its histograms with them unchecked: out of range, it wrote outside them
    colour_bin, texture_bin = _bins(rng)
    labels = rng.integers(0, 50, size=(9, 10)).astype(np.int32)
    labels[0, 0] = 49
    with pytest.raises(InvalidArgumentError, match=message):
        pixels.region_histograms(labels, n_regions, colour_bin, texture_bin, n_colour_bins=n_colour_bins)
