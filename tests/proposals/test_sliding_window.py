"""Sliding windows: every window of every size, shape and position, and how many there are."""

import numpy as np
import pytest

from scratchdet.errors import InvalidArgumentError
from scratchdet.proposals import count_sliding_windows, sliding_windows


@pytest.mark.parametrize("shape", [(48, 64), (480, 640, 3), (31, 17)])
@pytest.mark.parametrize("stride", [0.25, 0.5, 1.0])
def test_count_matches_the_windows_built(shape, stride):
    windows = sliding_windows(shape, sizes=(8, 16, 24), ratios=(0.5, 1.0, 2.0), stride=stride)
    assert len(windows) == count_sliding_windows(shape, sizes=(8, 16, 24), ratios=(0.5, 1.0, 2.0), stride=stride)


def test_windows_lie_inside_the_image_and_have_the_asked_shapes():
    windows = sliding_windows((50, 70), sizes=(16,), ratios=(0.5, 2.0), stride=0.5)
    assert windows.dtype == np.float32
    assert np.all(windows[:, :2] >= 0) and np.all(windows[:, 2] <= 70) and np.all(windows[:, 3] <= 50)
    sides = {(float(w), float(h)) for w, h in zip(windows[:, 2] - windows[:, 0], windows[:, 3] - windows[:, 1])}
    assert sides == {(23.0, 11.0), (11.0, 23.0)}  # area about 16^2, height / width = 0.5 and 2


def test_windows_of_one_shape_tile_the_image_at_the_stride():
    windows = sliding_windows((8, 12), sizes=(4,), ratios=(1.0,), stride=0.5)
    xs = np.unique(windows[:, 0])
    ys = np.unique(windows[:, 1])
    np.testing.assert_array_equal(xs, [0, 2, 4, 6, 8])
    np.testing.assert_array_equal(ys, [0, 2, 4])
    assert len(windows) == len(xs) * len(ys)


def test_window_larger_than_the_image_is_left_out():
    assert count_sliding_windows((10, 10), sizes=(32,), ratios=(1.0,)) == 0
    assert sliding_windows((10, 10), sizes=(32,), ratios=(1.0,)).shape == (0, 4)


@pytest.mark.parametrize("sizes, ratios", [(1e300, 1e20), (1e200, 1e-300)], ids=["too-tall", "too-wide"])
def test_window_whose_side_overflows_to_infinity_is_left_out(sizes, ratios):
    assert count_sliding_windows((20, 20), sizes=sizes, ratios=ratios) == 0
    assert sliding_windows((20, 20), sizes=sizes, ratios=ratios).shape == (0, 4)


def test_window_exactly_the_image_size_fits_once():
    np.testing.assert_array_equal(sliding_windows((16, 16), sizes=(16,), ratios=(1.0,)), [[0, 0, 16, 16]])


@pytest.mark.parametrize(
    "kwargs",
    [{"stride": 0.0}, {"stride": 1.5}, {"sizes": (0,)}, {"ratios": (-1.0,)}, {"image_shape": (0, 5)},
     {"ratios": (float("inf"),)}, {"sizes": (float("inf"),)}, {"sizes": ("32",)}, {"sizes": "32"}, {"stride": "half"},
     {"image_shape": (20.5, 20)}, {"image_shape": (True, 20)}, {"image_shape": "ab"}, {"image_shape": None}],
    ids=["zero-stride", "stride-above-one", "zero-size", "negative-ratio", "empty-image", "infinite-ratio",
         "infinite-size", "text-size", "text-sizes", "text-stride", "fractional-height", "bool-height", "text-shape", "no-shape"],
)
def test_rejects_bad_arguments(kwargs):
    args = {"image_shape": (20, 20), **kwargs}
    with pytest.raises(InvalidArgumentError, match=next(iter(kwargs))):
        sliding_windows(**args)
    with pytest.raises(InvalidArgumentError, match=next(iter(kwargs))):
        count_sliding_windows(**args)


@pytest.mark.parametrize("kwargs", [{"sizes": ()}, {"ratios": []}, {"sizes": np.zeros(0)}])
def test_rejects_no_sizes_or_no_ratios_instead_of_returning_no_windows(kwargs):
    for function in (sliding_windows, count_sliding_windows):
        with pytest.raises(InvalidArgumentError, match=f"{next(iter(kwargs))} must hold at least one number"):
            function((20, 20), **kwargs)


def test_one_size_and_one_ratio_may_be_given_as_numbers():
    np.testing.assert_array_equal(sliding_windows((16, 16), sizes=16, ratios=1.0), [[0, 0, 16, 16]])


def test_step_rounds_the_stride_times_the_window_to_the_nearest_pixel():
    # a 7-pixel window at stride 0.5 moves round(3.5) = 4 pixels, not 3
    windows = sliding_windows((15, 15), sizes=(7,), ratios=(1.0,), stride=0.5)
    np.testing.assert_array_equal(np.unique(windows[:, 0]), [0, 4, 8])
    assert count_sliding_windows((15, 15), sizes=(7,), ratios=(1.0,), stride=0.6) == 9  # round(4.2) = 4


@pytest.mark.parametrize("size", [5, 7, 9, 11, 13])
def test_halves_round_up_for_every_window(size):
    # Python's round(2.5) is 2 and round(3.5) is 4: steps and sides must not depend on the parity
    windows = sliding_windows((40, 40), sizes=(size,), ratios=(1.0,), stride=0.5)
    assert np.diff(np.unique(windows[:, 0])).tolist() == [(size + 1) // 2] * (len(np.unique(windows[:, 0])) - 1)
    # a ratio of 4 makes the window size / 2 wide and 2 * size tall: 2.5 -> 3 for size 5
    narrow = sliding_windows((40, 40), sizes=(size,), ratios=(4.0,), stride=1.0)
    assert set((narrow[:, 2] - narrow[:, 0]).tolist()) == {(size + 1) // 2}


def test_images_beyond_float32_whole_numbers_are_refused_but_counted():
    with pytest.raises(InvalidArgumentError, match="2\\*\\*24"):
        sliding_windows((1, 2**24 + 4), sizes=1, ratios=1.0, stride=1.0)
    assert count_sliding_windows((1, 2**24 + 4), sizes=1, ratios=1.0, stride=1.0) == 2**24 + 4
    # a window 2**23 wide and 1 tall (area 2**23, height / width 2**-23) moving half its width: 3 positions
    wide = sliding_windows((1, 2**24), sizes=2**11.5, ratios=2.0**-23, stride=0.5)
    assert wide.tolist() == [[0, 0, 2**23, 1], [2**22, 0, 2**22 + 2**23, 1], [2**23, 0, 2**24, 1]]
