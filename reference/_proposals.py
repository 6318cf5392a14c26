"""Frozen segmentations from scikit-image and Selective Search results from OpenCV.

Writes:
- ``proposals_felzenszwalb.npz`` / ``.json``: scikit-image's Felzenszwalb labels on the real
  photographs that ship with scikit-image, scaled down to 64 rows (the inputs are stored too), and,
  at full resolution, scikit-image's and scratchdet's segment counts and their adjusted Rand index.
- ``proposals_opencv.npz`` / ``.json``: OpenCV's Selective Search (fast and quality) on seeded
  synthetic scenes of shaded, noisy, overlapping rectangles: its box counts, recall at IoU 0.5 / 0.7 and MABO,
  against which the tests hold scratchdet's proposals.
"""

import json
import pathlib
import platform
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as `python reference/generate.py` from a plain checkout

from scratchdet._files import atomic_path, atomic_write  # noqa: E402

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
SETTINGS = ((100.0, 0.8, 20), (300.0, 0.8, 50))  # (scale, sigma, min_size)
SCENE_SEED = 0
N_SCENES = 6


def small_photo(name, height=64):
    """A scikit-image photograph scaled down to `height` rows, (height, W, 3) uint8."""
    import skimage.data
    import skimage.transform

    image = getattr(skimage.data, name)()
    width = int(round(image.shape[1] * height / image.shape[0]))
    small = skimage.transform.resize(image, (height, width), anti_aliasing=True)
    return np.round(small * 255).astype(np.uint8)


def cluttered_scene(rng, height=96, width=128, n_objects=6):
    """Shaded, noisy rectangles that overlap on a noisy background: (H, W, 3) uint8 and (n, 4) xyxy.

    Hard enough that neither OpenCV nor scratchdet finds every box exactly: each rectangle has a
    colour gradient across it and pixel noise, and later rectangles hide parts of earlier ones
    (their boxes stay the full rectangles, as annotations of occluded objects do).
    """
    image = rng.normal(120.0, 30.0, size=(height, width, 3))
    boxes = []
    for _ in range(n_objects):
        w, h = rng.integers(width // 8, width // 2), rng.integers(height // 8, height // 2)
        x1, y1 = rng.integers(0, width - w), rng.integers(0, height - h)
        start, end = rng.uniform(0, 255, size=3), rng.uniform(0, 255, size=3)
        ramp = np.linspace(0.0, 1.0, w)[None, :, None]  # (1, w, 1) left-to-right shading
        image[y1 : y1 + h, x1 : x1 + w] = start + (end - start) * ramp + rng.normal(0.0, 20.0, size=(h, w, 3))
        boxes.append([x1, y1, x1 + w, y1 + h])
    return np.round(image.clip(0, 255)).astype(np.uint8), np.array(boxes, dtype=np.float64)


def opencv_selective_search(image, mode):
    """OpenCV's Selective Search boxes, (N, 4) float64 xyxy, for an RGB uint8 image."""
    import cv2

    cv2.setNumThreads(1)
    search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    search.setBaseImage(np.ascontiguousarray(image[:, :, ::-1]))  # OpenCV wants BGR
    if mode == "fast":
        search.switchToSelectiveSearchFast()
    else:
        search.switchToSelectiveSearchQuality()
    rects = search.process().astype(np.float64)  # (N, 4) x, y, w, h
    return np.c_[rects[:, :2], rects[:, :2] + rects[:, 2:]]


def _felzenszwalb(outdir):
    import skimage
    import skimage.data
    from skimage.segmentation import felzenszwalb as skimage_felzenszwalb

    from scratchdet.proposals import adjusted_rand_index, felzenszwalb

    arrays, cases, full = {}, [], []
    for name in PHOTOS:
        image = small_photo(name)
        for scale, sigma, min_size in SETTINGS:
            case_id = f"{name}_{int(scale)}"
            arrays[f"{case_id}_image"] = image
            labels = skimage_felzenszwalb(image, scale=scale, sigma=sigma, min_size=min_size)
            arrays[f"{case_id}_labels"] = labels.astype(np.int16)
            cases.append({"id": case_id, "photo": name, "scale": scale, "sigma": sigma, "min_size": min_size,
                          "n_segments": int(labels.max()) + 1})
        # full resolution: the acceptance numbers, recorded
        photo = getattr(skimage.data, name)()
        for scale, sigma, min_size in SETTINGS:
            theirs = skimage_felzenszwalb(photo, scale=scale, sigma=sigma, min_size=min_size)
            ours = felzenszwalb(photo, scale=scale, sigma=sigma, min_size=min_size)
            full.append({"photo": name, "shape": list(photo.shape), "scale": scale, "sigma": sigma,
                         "min_size": min_size, "n_segments_skimage": int(theirs.max()) + 1,
                         "n_segments_scratchdet": int(ours.max()) + 1,
                         "adjusted_rand_index": round(adjusted_rand_index(ours, theirs), 6)})
    npz = outdir / "proposals_felzenszwalb.npz"
    with atomic_path(npz) as tmp:
        np.savez_compressed(tmp, **arrays)
    meta = {
        "source": "skimage.segmentation.felzenszwalb on skimage.data photographs scaled to 64 rows",
        "versions": {"scikit-image": skimage.__version__, "numpy": np.__version__, "python": platform.python_version()},
        "cases": cases,
        "full_resolution": full,
        "mean_adjusted_rand_index_full_resolution": round(float(np.mean([f["adjusted_rand_index"] for f in full])), 6),
    }
    path = outdir / "proposals_felzenszwalb.json"
    with atomic_write(path) as f:
        json.dump(meta, f, indent=1)
    return [npz, path]


def _opencv(outdir):
    import cv2

    from scratchdet.eval.recall import proposal_recall

    rng = np.random.default_rng(SCENE_SEED)
    arrays, scenes = {}, []
    all_boxes, all_proposals = [], {"fast": [], "quality": []}
    for index in range(N_SCENES):
        image, boxes = cluttered_scene(rng)
        arrays[f"scene{index}_image"] = image
        arrays[f"scene{index}_boxes"] = boxes
        scene = {"id": f"scene{index}"}
        for mode in ("fast", "quality"):
            proposals = opencv_selective_search(image, mode)
            all_proposals[mode].append(proposals)
            result = proposal_recall(boxes, proposals, iou_thresholds=(0.5, 0.7))
            scene[mode] = {"n_boxes": int(len(proposals)), "recall_0.5": result["recall"][0.5],
                           "recall_0.7": result["recall"][0.7], "mabo": result["mabo"]}
        scenes.append(scene)
        all_boxes.append(boxes)
    pooled = {}
    for mode, proposals in all_proposals.items():
        result = proposal_recall(all_boxes, proposals, iou_thresholds=(0.5, 0.7))
        pooled[mode] = {"mean_n_boxes": float(np.mean([len(p) for p in proposals])),
                        "recall_0.5": result["recall"][0.5], "recall_0.7": result["recall"][0.7],
                        "mabo": result["mabo"]}
    npz = outdir / "proposals_opencv.npz"
    with atomic_path(npz) as tmp:
        np.savez_compressed(tmp, **arrays)
    meta = {
        "source": "cv2.ximgproc.segmentation.createSelectiveSearchSegmentation on seeded cluttered-rectangle scenes (see cluttered_scene)",
        "seed": SCENE_SEED,
        "versions": {"opencv": cv2.__version__, "numpy": np.__version__, "python": platform.python_version()},
        "pooled": pooled,
        "scenes": scenes,
    }
    path = outdir / "proposals_opencv.json"
    with atomic_write(path) as f:
        json.dump(meta, f, indent=1)
    return [npz, path]


def generate(outdir):
    """Write the frozen proposal references into `outdir`; returns the paths written."""
    outdir = pathlib.Path(outdir)
    return _felzenszwalb(outdir) + _opencv(outdir)
