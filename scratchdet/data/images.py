"""Reading images: every file or array becomes (H, W, 3) uint8 RGB (or, asked for, a greyscale file
(H, W) uint8), or a clear error.

Greyscale becomes three equal channels, alpha is dropped, CMYK (and other non-RGB colour models)
is converted to RGB, a TIFF that stores each channel as its own plane is put back in (H, W, C)
order, 16-bit and float images are scaled to 0..255. Decoding is left to imageio (the library behind `skimage.io.imread`).
"""

import os
import warnings

import numpy as np

from scratchdet.errors import DataFormatError, FileMissingError


def as_rgb_uint8(array, name="image"):
    """An in-memory image as (H, W, 3) uint8 RGB.

    Args:
        array: (H, W) greyscale, (H, W, 1) greyscale, (H, W, 2) greyscale + alpha, (H, W, 3) RGB or
            (H, W, 4) RGBA, of dtype
            - bool: False -> 0, True -> 255;
            - uint8: taken as it is;
            - uint16: scaled by 255 / 65535;
            - other integers: values must lie in 0..255;
            - float: values in [0, 1] are scaled by 255; any other range is stretched linearly from
              [min, max] to [0, 255]. NaN or infinite values are an error.
        name: how error messages call the image (e.g. its file name).

    Returns:
        (H, W, 3) uint8, C-contiguous.
    """
    image = np.asarray(array)
    # 1. the channels: greyscale -> 3 channels, alpha dropped
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4):
        raise DataFormatError(
            f"{name}: expected an (H, W) greyscale, (H, W, 3) RGB or (H, W, 4) RGBA image, got shape {image.shape}"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise DataFormatError(f"{name}: the image has no pixels (shape {image.shape})")
    if image.shape[2] in (1, 2):  # grey, or grey + alpha
        image = np.repeat(image[:, :, :1], 3, axis=2)
    else:
        image = image[:, :, :3]
    # 2. the values: scaled to 0..255
    if image.dtype == np.uint8:
        out = image
    elif image.dtype == np.bool_:
        out = image.astype(np.uint8) * 255
    elif image.dtype == np.uint16:
        out = np.round(image.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
    elif np.issubdtype(image.dtype, np.integer):
        if image.min() < 0 or image.max() > 255:
            raise DataFormatError(
                f"{name}: integer images of dtype {image.dtype} must hold values in 0..255, "
                f"got {image.min()}..{image.max()}"
            )
        out = image.astype(np.uint8)
    elif np.issubdtype(image.dtype, np.floating):
        values = image.astype(np.float64)
        if not np.all(np.isfinite(values)):
            raise DataFormatError(f"{name}: the image contains NaN or infinite values")
        lo, hi = float(values.min()), float(values.max())
        if lo < 0.0 or hi > 1.0:  # not in [0, 1]: stretch [lo, hi] onto [0, 1]
            values = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
        out = np.round(values * 255.0).astype(np.uint8)
    else:
        raise DataFormatError(f"{name}: unsupported pixel type {image.dtype}")
    return np.ascontiguousarray(out)


# Pillow colour modes whose channels are not R, G, B (+ alpha): the decoder converts them to RGB.
COLOUR_MODES_CONVERTED_TO_RGB = ("CMYK", "YCbCr", "LAB", "HSV")

TIFF_PLANAR_CONFIGURATION = 284  # the TIFF tag: 1 = channels interleaved (RGBRGB...), 2 = one plane per channel


def _header(path):
    """``(mode, planar)`` from the file's header as Pillow reads it (it decodes no pixels): the colour
    mode ("RGB", "CMYK", ...) and whether it is a TIFF that stores each channel as a separate plane
    (PlanarConfiguration 2); ``(None, False)`` where Pillow cannot open the file.

    Asked of Pillow whatever plugin imageio would pick: imageio's TIFF plugin (tifffile) reports no
    mode, hands a CMYK TIFF over as four channels that read as RGBA, and a planar RGB TIFF as
    (3, H, W). A file declaring more pixels than Pillow's decompression-bomb limit (twice
    `PIL.Image.MAX_IMAGE_PIXELS`) is a DataFormatError here, before anything is decoded."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            planar = getattr(image, "tag_v2", {}).get(TIFF_PLANAR_CONFIGURATION) == 2
            return image.mode, planar
    except Image.DecompressionBombError as error:  # refused whichever plugin would decode it (tifffile has no limit)
        raise DataFormatError(f"{path}: {error}") from None
    except Exception:  # not a format Pillow knows: imread decides alone
        return None, False


def load_image(path, keep_grey=False):
    """Read an image file (JPEG, PNG, TIFF, BMP, ...) as (H, W, 3) uint8 RGB.

    Args:
        path: file path (str, bytes or os.PathLike).
        keep_grey: return a greyscale file (one channel, or grey + alpha) as (H, W) uint8 instead of
            three equal channels: what works on intensities alone (Felzenszwalb segmentation of a
            grey image) gives another result on three copies of them.

    Returns:
        (H, W, 3) uint8 RGB (see `as_rgb_uint8` for greyscale, alpha, 16-bit and float files), or
        (H, W) uint8 for a greyscale file with `keep_grey`. The pixels as stored: an EXIF orientation
        tag is not applied (as `skimage.io.imread`).

    Raises:
        FileMissingError: no such file.
        DataFormatError: the file is empty, is not an image, holds an unsupported layout (e.g. an
            animation or a volume), or declares more pixels than Pillow's decompression-bomb limit.
    """
    path = os.fsdecode(path)  # a str: imageio would take bytes for the encoded image itself
    if not os.path.exists(path):
        raise FileMissingError(f"{path}: no such file")
    if os.path.isdir(path):
        raise DataFormatError(f"{path}: is a directory, expected an image file")
    if os.path.getsize(path) == 0:
        raise DataFormatError(f"{path}: the file is empty, expected an image")
    import imageio.v3 as iio

    try:
        with warnings.catch_warnings():  # imageio warns about deprecated plugins it tries on the way
            warnings.simplefilter("ignore", DeprecationWarning)
            mode, planar = _header(path)
            if mode in COLOUR_MODES_CONVERTED_TO_RGB:
                # colour models other than RGB (a CMYK JPEG: 4 channels that are not RGBA) are
                # converted to RGB by the decoder, which knows them
                image = iio.imread(path, plugin="pillow", mode="RGB")
            elif planar and mode in ("RGB", "RGBA"):
                # one plane per channel: tifffile gives (C, H, W), in every bit depth; -> (H, W, C)
                # (several pages give (pages, C, H, W), refused below)
                image = np.asarray(iio.imread(path, plugin="tifffile"))
                image = np.moveaxis(image, 0, -1) if image.ndim == 3 else image
            else:
                image = iio.imread(path)
    except DataFormatError:
        raise
    except Exception as error:  # imageio raises many types for undecodable input
        reason = " ".join(str(error).split())[:120]  # one line: imageio's messages span several
        raise DataFormatError(f"{path}: not a readable image ({type(error).__name__}: {reason})") from None
    image = np.asarray(image)
    if image.ndim == 4 and image.shape[0] == 1:  # a one-frame stack
        image = image[0]
    if image.ndim not in (2, 3) or image.dtype == object:
        raise DataFormatError(f"{path}: expected a single 2-D image, got an array of shape {image.shape}")
    rgb = as_rgb_uint8(image, name=path)
    grey = image.ndim == 2 or image.shape[2] in (1, 2)
    return np.ascontiguousarray(rgb[:, :, 0]) if keep_grey and grey else rgb
