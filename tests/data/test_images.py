"""Image loading: every supported file or array becomes (H, W, 3) uint8 RGB, anything else a clear error."""

import imageio.v3 as iio
import numpy as np
import pytest

from scratchdet.data.images import as_rgb_uint8, load_image
from scratchdet.errors import DataFormatError, FileMissingError


@pytest.fixture
def rgb(rng):
    return rng.integers(0, 256, size=(6, 7, 3), dtype=np.uint8)


def test_png_round_trip_is_exact(tmp_path, rgb):
    iio.imwrite(tmp_path / "a.png", rgb)
    np.testing.assert_array_equal(load_image(tmp_path / "a.png"), rgb)


def test_jpeg_is_read_as_rgb(tmp_path, rng):
    smooth = np.repeat(np.linspace(0, 255, 32, dtype=np.uint8)[None, :, None], 24, axis=0).repeat(3, axis=2)
    iio.imwrite(tmp_path / "a.jpg", smooth)
    image = load_image(tmp_path / "a.jpg")
    assert image.shape == (24, 32, 3) and image.dtype == np.uint8
    assert np.abs(image.astype(int) - smooth).max() <= 8  # lossy, but close


def test_greyscale_file_becomes_three_equal_channels(tmp_path, rgb):
    iio.imwrite(tmp_path / "g.png", rgb[:, :, 0])
    image = load_image(tmp_path / "g.png")
    assert image.shape == (6, 7, 3)
    for c in range(3):
        np.testing.assert_array_equal(image[:, :, c], rgb[:, :, 0])


def test_rgba_file_drops_alpha(tmp_path, rgb):
    rgba = np.concatenate([rgb, np.full((6, 7, 1), 10, np.uint8)], axis=2)
    iio.imwrite(tmp_path / "a.png", rgba)
    np.testing.assert_array_equal(load_image(tmp_path / "a.png"), rgb)


@pytest.mark.parametrize("suffix", [".jpg", ".tif"])  # a TIFF goes through imageio's tifffile plugin, which reports no mode
def test_cmyk_is_converted_to_rgb_not_read_as_rgba(tmp_path, suffix):
    PIL = pytest.importorskip("PIL.Image")
    red = np.zeros((8, 8, 3), np.uint8)
    red[:, :, 0] = 220
    PIL.fromarray(red).convert("CMYK").save(tmp_path / f"cmyk{suffix}")
    image = load_image(tmp_path / f"cmyk{suffix}")
    assert image.shape == (8, 8, 3)
    assert np.abs(image.astype(int) - red).max() <= 8, image[0, 0]  # red, not C, M, Y taken as R, G, B


def test_palette_png_with_transparency_is_its_palette_colours(tmp_path):
    PIL = pytest.importorskip("PIL.Image")
    indices = np.array([[0, 1], [1, 0]], np.uint8)
    picture = PIL.fromarray(indices, mode="P")
    picture.putpalette([200, 10, 20, 5, 250, 30] + [0] * (3 * 254))
    picture.info["transparency"] = 0
    picture.save(tmp_path / "palette.png", transparency=0)
    np.testing.assert_array_equal(load_image(tmp_path / "palette.png")[0], [[200, 10, 20], [5, 250, 30]])


@pytest.mark.parametrize("channels", [3, 4])
def test_planar_rgb_tiff_is_read_as_rgb_not_refused(tmp_path, rng, channels):
    # TIFF's PlanarConfiguration 2 stores R, G, B (, A) as separate planes; tifffile hands them
    # over as (C, H, W). A 3 x 3 image, where (C, H, W) and (H, W, C) have the same shape, too.
    tifffile = pytest.importorskip("tifffile")
    for height, width in ((5, 6), (channels, channels)):
        pixels = rng.integers(0, 256, size=(height, width, channels), dtype=np.uint8)  # (H, W, C)
        extra = {"extrasamples": ["unassalpha"]} if channels == 4 else {}
        path = tmp_path / f"planar{height}.tif"
        tifffile.imwrite(path, np.moveaxis(pixels, 2, 0), photometric="rgb", planarconfig="separate", **extra)
        np.testing.assert_array_equal(load_image(path), pixels[:, :, :3])


def test_path_may_be_bytes_or_pathlib(tmp_path, rgb):
    iio.imwrite(tmp_path / "a.png", rgb)
    np.testing.assert_array_equal(load_image(str(tmp_path / "a.png").encode()), rgb)  # not read as image data
    np.testing.assert_array_equal(load_image(tmp_path / "a.png"), rgb)


def test_16_bit_file_is_scaled_to_8_bits(tmp_path):
    grey16 = np.array([[0, 257, 65535]], dtype=np.uint16)
    iio.imwrite(tmp_path / "g16.png", grey16)
    np.testing.assert_array_equal(load_image(tmp_path / "g16.png")[0, :, 0], [0, 1, 255])


def test_float_tiff_in_unit_range_is_scaled(tmp_path):
    iio.imwrite(tmp_path / "f.tiff", np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    np.testing.assert_array_equal(load_image(tmp_path / "f.tiff")[0, :, 1], [0, 128, 255])


def test_one_pixel_image_loads(tmp_path):
    iio.imwrite(tmp_path / "one.png", np.zeros((1, 1, 3), np.uint8))
    assert load_image(tmp_path / "one.png").shape == (1, 1, 3)  # the proposal functions reject it


def test_missing_file_is_file_missing_error(tmp_path):
    with pytest.raises(FileMissingError, match="no such file"):
        load_image(tmp_path / "nope.png")


def test_empty_file_is_a_data_format_error(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(DataFormatError, match="empty"):
        load_image(tmp_path / "empty.png")


@pytest.mark.parametrize("name, content", [("text.png", b"hello, not a picture"), ("junk.jpg", bytes(range(256)) * 4)])
def test_non_image_is_a_one_line_data_format_error(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataFormatError, match="not a readable image") as info:
        load_image(tmp_path / name)
    assert "\n" not in str(info.value)


def test_directory_is_a_data_format_error(tmp_path):
    with pytest.raises(DataFormatError, match="directory"):
        load_image(tmp_path)


@pytest.mark.parametrize(
    "array, expected",
    [
        (np.array([[True, False]]), [255, 0]),
        (np.array([[0, 128, 255]], dtype=np.int64), [0, 128, 255]),
        (np.array([[0.0, 1.0]]), [0, 255]),
        (np.array([[-1.0, 1.0]]), [0, 255]),  # outside [0, 1]: stretched from [min, max]
        (np.array([[0, 65535]], dtype=np.uint16), [0, 255]),
    ],
)
def test_as_rgb_uint8_scales_each_dtype(array, expected):
    out = as_rgb_uint8(array)
    assert out.dtype == np.uint8 and out.shape == array.shape + (3,)
    np.testing.assert_array_equal(out[0, :, 0], expected)


def test_as_rgb_uint8_greyscale_with_alpha():
    grey_alpha = np.stack([np.array([[10, 20]], np.uint8), np.array([[255, 0]], np.uint8)], axis=2)
    np.testing.assert_array_equal(as_rgb_uint8(grey_alpha), [[[10] * 3, [20] * 3]])


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((4, 4, 5), np.uint8), "shape"),
        (np.zeros((0, 4, 3), np.uint8), "no pixels"),
        (np.zeros((2, 2, 2, 3), np.uint8), "shape"),
        (np.array([[300, 2]], dtype=np.int32), "0..255"),
        (np.array([[np.nan, 0.5]]), "NaN"),
        (np.array([[1 + 2j]]), "unsupported"),
    ],
)
def test_as_rgb_uint8_rejects(array, message):
    with pytest.raises(DataFormatError, match=message):
        as_rgb_uint8(array)


def test_a_tiff_declaring_too_many_pixels_is_refused_before_decoding(tmp_path, monkeypatch):
    # imageio reads TIFFs with tifffile, which has no size limit: Pillow's decompression-bomb check
    # (on the header alone) stands for every format
    tifffile = pytest.importorskip("tifffile")
    PIL = pytest.importorskip("PIL.Image")
    monkeypatch.setattr(PIL, "MAX_IMAGE_PIXELS", 1000)  # the limit is twice this: a 50 x 50 image passes it
    tifffile.imwrite(tmp_path / "big.tif", np.zeros((50, 50), np.uint8), compression="zlib")
    with pytest.raises(DataFormatError, match="big.tif: .*exceeds limit"):
        load_image(tmp_path / "big.tif")
    tifffile.imwrite(tmp_path / "small.tif", np.zeros((20, 40), np.uint8), compression="zlib")
    assert load_image(tmp_path / "small.tif").shape == (20, 40, 3)
