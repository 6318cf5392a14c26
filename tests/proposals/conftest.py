"""Small images shared by the proposal tests: real photographs scaled down, and synthetic scenes."""

import numpy as np
import pytest
import skimage.data
import skimage.transform


def small_photo(name, height=64):
    """A scikit-image photograph scaled down to `height` rows: (height, W, 3) uint8 RGB."""
    image = getattr(skimage.data, name)()
    width = int(round(image.shape[1] * height / image.shape[0]))
    small = skimage.transform.resize(image, (height, width), anti_aliasing=True)  # float in [0, 1]
    return np.round(small * 255).astype(np.uint8)


def _rectangles_scene(rng, height=96, width=128, n_objects=3):
    """A noisy background with flat-coloured rectangles: (H, W, 3) uint8 and their (n, 4) xyxy boxes."""
    image = (rng.normal(120.0, 12.0, size=(height, width, 3))).clip(0, 255)
    boxes = []
    for _ in range(n_objects):
        w, h = rng.integers(width // 6, width // 2), rng.integers(height // 6, height // 2)
        x1, y1 = rng.integers(0, width - w), rng.integers(0, height - h)
        image[y1 : y1 + h, x1 : x1 + w] = rng.uniform(0, 255, size=3)
        boxes.append([x1, y1, x1 + w, y1 + h])
    return np.round(image).astype(np.uint8), np.array(boxes, dtype=np.float64)


@pytest.fixture(scope="session")
def photos():
    """Four real photographs (astronaut, coffee, chelsea, rocket), 64 rows high."""
    return {name: small_photo(name) for name in ("astronaut", "coffee", "chelsea", "rocket")}


@pytest.fixture(scope="session")
def rectangles_scene():
    """``make(rng, height=96, width=128, n_objects=3) -> (image, boxes)``: flat rectangles on noise."""
    return _rectangles_scene
