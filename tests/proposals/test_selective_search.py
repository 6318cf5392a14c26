"""Selective Search (Uijlings et al. 2013): the grouping, the strategies, the ranking, the boxes."""

import json
import pathlib

import numpy as np
import pytest

from scratchdet.errors import InvalidArgumentError
from scratchdet.eval.recall import proposal_recall
from scratchdet.kernels.cpu import proposals as kernels
from scratchdet.proposals import MODES, Strategy, felzenszwalb, selective_search
from scratchdet.proposals.selective_search import hierarchical_grouping, rank_boxes, region_statistics

REFERENCE = pathlib.Path(__file__).resolve().parents[2] / "reference" / "outputs"


def _per_pixel(image):
    """Colour and texture bins of an RGB image, as Selective Search computes them (RGB space)."""
    pixels = kernels.convert_colour(image, 0)
    gx, gy = kernels.gaussian_gradients(pixels, 1.0)
    return kernels.colour_bins(pixels, 25), kernels.texture_bins(gx, gy, 10)


def _brute_force_grouping(labels, colour_bin, texture_bin, weights):
    """Algorithm 1 of the paper the slow way: every similarity recomputed from the pixels of the union."""
    height, width = labels.shape
    area = float(height * width)
    masks = {r: labels == r for r in range(labels.max() + 1)}

    def histogram(mask):
        colour = np.concatenate([np.bincount(colour_bin[mask][:, c], minlength=25) for c in range(3)])
        tex = texture_bin[mask].reshape(-1, 3 * 8)
        texture = np.concatenate([np.bincount(tex[:, q], minlength=10) for q in range(3 * 8)])
        return colour / colour.sum(), texture / texture.sum()

    def bbox_area(mask):
        rows, cols = np.nonzero(mask)
        return (rows.max() + 1 - rows.min()) * (cols.max() + 1 - cols.min())

    def adjacent(m1, m2):
        grown = m1.copy()
        grown[1:] |= m1[:-1]
        grown[:-1] |= m1[1:]
        grown[:, 1:] |= grown[:, :-1].copy()
        grown[:, :-1] |= grown[:, 1:].copy()
        return bool((grown & m2).any())

    def similarity(m1, m2):
        c1, t1 = histogram(m1)
        c2, t2 = histogram(m2)
        s1, s2 = m1.sum(), m2.sum()
        terms = [np.minimum(c1, c2).sum(), np.minimum(t1, t2).sum(), 1 - (s1 + s2) / area,
                 1 - (bbox_area(m1 | m2) - s1 - s2) / area]
        return sum(w * t for w, t in zip(weights, terms))

    merges = []
    while len(masks) > 1:
        best = None
        alive = sorted(masks)
        for x, i in enumerate(alive):
            for j in alive[x + 1 :]:
                if adjacent(masks[i], masks[j]):
                    s = similarity(masks[i], masks[j])
                    if best is None or s > best[0]:
                        best = (s, i, j)
        _, i, j = best
        new = labels.max() + 1 + len(merges)
        masks[new] = masks.pop(i) | masks.pop(j)
        merges.append((i, j))
    return np.array(merges)


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (0.0, 1.0, 1.0, 1.0), (1.0, 0.0, 0.0, 0.0)])
def test_grouping_matches_brute_force_that_recomputes_histograms_from_pixels(rng, weights):
    # Merged histograms come from the parts, C_t = (|r_i| C_i + |r_j| C_j) / (|r_i| + |r_j|) (eq. 3);
    # that must give exactly the merges of recomputing each union's histograms from its pixels.
    image = (np.kron(rng.integers(0, 255, size=(4, 5, 3)), np.ones((6, 6, 1))) + rng.normal(0, 8, (24, 30, 3)))
    image = image.clip(0, 255).astype(np.uint8)
    labels = felzenszwalb(image, scale=30, sigma=0.8, min_size=10)
    colour_bin, texture_bin = _per_pixel(image)
    stats = region_statistics(labels, int(labels.max()) + 1, colour_bin, texture_bin, 25, 10)
    merges, _ = hierarchical_grouping(*stats, float(labels.size), *weights)
    expected = _brute_force_grouping(labels, colour_bin, texture_bin, weights)
    assert labels.max() + 1 >= 8, "the test needs a few regions"
    np.testing.assert_array_equal(np.sort(merges, axis=1), np.sort(expected, axis=1))


def test_region_statistics_of_a_known_segmentation():
    labels = np.array([[0, 0, 1], [0, 0, 1], [2, 2, 1]], dtype=np.int32)
    colour_bin = np.zeros((3, 3, 3), np.uint8)
    colour_bin[:, :, 0] = [[0, 0, 24], [0, 0, 24], [3, 3, 24]]
    texture_bin = np.zeros((3, 3, 3, 8), np.uint8)
    sizes, boxes, colour, texture, pairs = region_statistics(labels, 3, colour_bin, texture_bin, 25, 10)
    np.testing.assert_array_equal(sizes, [4, 3, 2])
    np.testing.assert_array_equal(boxes, [[0, 0, 2, 2], [2, 0, 3, 3], [0, 2, 2, 3]])
    np.testing.assert_allclose(colour.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(texture.sum(axis=1), 1.0, rtol=1e-6)
    assert colour[1, 24] == pytest.approx(1 / 3)  # channel 0 in bin 24 for all its pixels, over 3 channels
    np.testing.assert_array_equal(pairs, [[0, 1], [0, 2], [1, 2]])


def test_hierarchy_is_a_binary_merge_tree_up_to_the_whole_image(photos):
    image = photos["chelsea"]
    boxes, hierarchies = selective_search(image, mode="single", return_hierarchy=True)
    (h,) = hierarchies
    n_start = h.labels.max() + 1
    assert h.merges.shape == (n_start - 1, 2)
    merged = h.merges.ravel()
    assert len(np.unique(merged)) == merged.size, "each region is merged at most once"
    assert np.all(h.merges < n_start + np.arange(n_start - 1)[:, None]), "merges use regions that exist"
    for m, (i, j) in enumerate(h.merges):  # a merged region's box is the union of its parts' boxes
        union = [min(h.boxes[i, 0], h.boxes[j, 0]), min(h.boxes[i, 1], h.boxes[j, 1]),
                 max(h.boxes[i, 2], h.boxes[j, 2]), max(h.boxes[i, 3], h.boxes[j, 3])]
        np.testing.assert_array_equal(h.boxes[n_start + m], union)
        assert h.levels[n_start + m] == 1 + max(h.levels[i], h.levels[j])
    np.testing.assert_array_equal(h.boxes[-1], [0, 0, image.shape[1], image.shape[0]])
    for r in range(n_start):  # starting boxes are the segments' bounding boxes
        rows, cols = np.nonzero(h.labels == r)
        np.testing.assert_array_equal(h.boxes[r], [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])


@pytest.mark.parametrize("mode", ["single", "fast"])
def test_boxes_are_unique_float32_xyxy_inside_the_image(photos, mode):
    image = photos["astronaut"]
    boxes = selective_search(image, mode=mode)
    assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 4 and len(boxes) > 10
    assert np.all(boxes[:, 0] >= 0) and np.all(boxes[:, 1] >= 0)
    assert np.all(boxes[:, 2] <= image.shape[1]) and np.all(boxes[:, 3] <= image.shape[0])
    assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
    assert len(np.unique(boxes, axis=0)) == len(boxes)


def test_same_seed_same_boxes_other_seed_same_set_other_order(photos):
    image = photos["coffee"]
    a = selective_search(image, mode="fast", seed=3)
    b = selective_search(image, mode="fast", seed=3, n_threads=1)
    c = selective_search(image, mode="fast", seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    as_set = lambda x: set(map(tuple, x.tolist()))  # noqa: E731
    assert as_set(a) == as_set(c), "the seed only reorders the boxes"


def test_max_boxes_keeps_the_best_ranked(photos):
    image = photos["rocket"]
    all_boxes = selective_search(image, mode="fast", seed=0)
    np.testing.assert_array_equal(selective_search(image, mode="fast", seed=0, max_boxes=7), all_boxes[:7])


def test_rank_boxes_follows_position_times_random_and_keeps_first_duplicate():
    # two hierarchies of 3 regions each: positions counted from the top are 3, 2, 1
    first = np.array([[0, 0, 1, 1], [0, 0, 2, 2], [0, 0, 4, 4]], np.int32)
    second = np.array([[1, 1, 2, 2], [0, 0, 2, 2], [0, 0, 4, 4]], np.int32)
    rng = np.random.default_rng(0)
    draws = np.random.default_rng(0).random(6) * np.array([3, 2, 1, 3, 2, 1])
    boxes = rank_boxes([first, second], rng)
    ranked = np.concatenate([first, second])[np.argsort(draws, kind="stable")]
    _, keep = np.unique(ranked, axis=0, return_index=True)
    np.testing.assert_array_equal(boxes, ranked[np.sort(keep)])
    assert len(boxes) == 4


def test_modes_are_the_papers_strategy_sets():
    assert len(MODES["single"]) == 1 and MODES["single"][0] == Strategy("hsv", 100.0, "CTSF")
    assert len(MODES["fast"]) == 8  # 2 colour spaces x 2 k x 2 similarities
    assert len(MODES["quality"]) == 80  # 5 colour spaces x 4 k x 4 similarities
    assert {s.colour_space for s in MODES["quality"]} == {"hsv", "lab", "rgi", "h", "i"}
    assert {s.similarity for s in MODES["quality"]} == {"CTSF", "TSF", "F", "S"}


@pytest.mark.parametrize("colour_space", ["rgb", "hsv", "lab", "rgi", "i", "h"])
def test_every_colour_space_gives_proposals(photos, colour_space):
    boxes = selective_search(photos["chelsea"][:32, :48].copy(), strategies=[Strategy(colour_space, 50, "CTSF")])
    assert len(boxes) >= 2 and np.all(boxes[:, 2] <= 48)


def test_finds_flat_rectangles_on_a_noisy_background(rng, rectangles_scene):
    recalls = []
    for _ in range(3):
        image, gt = rectangles_scene(rng, n_objects=3)
        recalls.append(proposal_recall(gt, selective_search(image, mode="fast"), iou_thresholds=0.7)["recall"][0.7])
    assert np.mean(recalls) >= 0.9, recalls


@pytest.mark.parametrize("mode", ["fast", "quality"])
def test_recall_and_mabo_at_least_opencvs_on_frozen_scenes(mode):
    meta = json.loads((REFERENCE / "proposals_opencv.json").read_text())
    arrays = np.load(REFERENCE / "proposals_opencv.npz", allow_pickle=False)
    gts = [arrays[f"{s['id']}_boxes"] for s in meta["scenes"]]
    ours = [selective_search(arrays[f"{s['id']}_image"], mode=mode) for s in meta["scenes"]]
    result = proposal_recall(gts, ours, iou_thresholds=(0.5, 0.7))
    theirs = meta["pooled"][mode]
    assert result["recall"][0.5] >= theirs["recall_0.5"], (result["recall"], theirs)
    assert result["mabo"] >= theirs["mabo"] - 0.01, (result["mabo"], theirs)


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((1, 1, 3), np.uint8), "at least 2 pixels"),
        (np.zeros((8, 8), np.uint8), r"\(H, W, 3\) uint8"),
        (np.zeros((8, 8, 3), np.float32), r"\(H, W, 3\) uint8"),
    ],
)
def test_rejects_images_that_are_not_rgb_uint8(image, message):
    with pytest.raises(InvalidArgumentError, match=message):
        selective_search(image)


@pytest.mark.parametrize("shape", [(1, 9), (9, 1), (2, 2)])
def test_thin_images_give_boxes_inside_them(rng, shape):
    image = rng.integers(0, 256, size=shape + (3,), dtype=np.uint8)
    boxes = selective_search(image, mode="fast")
    assert len(boxes) >= 1
    assert np.all(boxes[:, 2] <= shape[1]) and np.all(boxes[:, 3] <= shape[0])
    assert (0.0, 0.0, float(shape[1]), float(shape[0])) in {tuple(b) for b in boxes.tolist()}


def test_uniform_image_is_one_region_and_one_box():
    np.testing.assert_array_equal(selective_search(np.full((8, 9, 3), 7, np.uint8), mode="fast"), [[0, 0, 9, 8]])


def test_two_pixel_image_gives_its_boxes():
    boxes = selective_search(np.array([[[0, 0, 0], [255, 255, 255]]], np.uint8), mode="single")
    assert len(boxes) >= 1 and {tuple(b) for b in boxes.tolist()} >= {(0.0, 0.0, 2.0, 1.0)}


@pytest.mark.parametrize(
    "kwargs",
    [{"mode": "slow"}, {"max_boxes": 0}, {"max_boxes": 2.5}, {"strategies": []}, {"strategies": ["hsv"]},
     {"n_threads": 0}, {"max_boxes": "many"}, {"max_boxes": True}, {"seed": -1}, {"seed": 1.5}, {"seed": "a"},
     {"seed": None}, {"mode": ["fast"]}, {"n_threads": float("nan")}, {"n_threads": float("inf")}],
    ids=["unknown-mode", "zero-max-boxes", "fractional-max-boxes", "no-strategies", "strategy-not-a-Strategy",
         "zero-threads", "text-max-boxes", "bool-max-boxes", "negative-seed", "fractional-seed", "text-seed",
         "no-seed-is-not-reproducible", "list-mode", "nan-threads", "infinite-threads"],
)
def test_rejects_bad_arguments(kwargs):
    with pytest.raises(InvalidArgumentError, match=next(iter(kwargs))):
        selective_search(np.zeros((8, 8, 3), np.uint8), **kwargs)


@pytest.mark.parametrize(
    "fields",
    [("xyz", 50, "CTSF"), ("hsv", 0, "CTSF"), ("hsv", 50, "CQ"), ("hsv", 50, ""), ("hsv", "50", "CTSF"),
     ("hsv", float("inf"), "CTSF"), (["hsv"], 50, "CTSF"), ("hsv", 50, ["C"])],
)
def test_strategy_rejects_bad_fields(fields):
    with pytest.raises(InvalidArgumentError):
        Strategy(*fields)


def test_strategy_with_k_above_int64_gives_the_whole_image():
    image = np.random.default_rng(0).integers(0, 256, size=(5, 6, 3), dtype=np.uint8)
    np.testing.assert_array_equal(selective_search(image, strategies=Strategy("hsv", 1e20, "CTSF")), [[0, 0, 6, 5]])


def test_one_strategy_may_be_given_without_a_sequence():
    image = np.zeros((6, 6, 3), np.uint8)
    strategy = Strategy("hsv", 50, "CTSF")
    np.testing.assert_array_equal(selective_search(image, strategies=strategy), selective_search(image, strategies=[strategy]))


_PLAIN_PYTHON_SCRIPT = """
import numpy as np
from scratchdet.proposals import Strategy, selective_search
image = (np.random.default_rng(0).random((12, 14, 3)) * 255).astype(np.uint8)
boxes = selective_search(image, strategies=[Strategy("hsv", 10, "CTSF"), Strategy("lab", 10, "TSF")], seed=1)
print(boxes.astype(int).tolist())
"""


def test_plain_python_run_gives_the_same_boxes_as_the_compiled_kernels():
    # NUMBA_DISABLE_JIT=1 turns every kernel into Python a debugger steps through (DESIGN.md)
    import os
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[2]
    run = subprocess.run([sys.executable, "-c", _PLAIN_PYTHON_SCRIPT], cwd=root, capture_output=True, text=True,
                         env={**os.environ, "NUMBA_DISABLE_JIT": "1"}, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    image = (np.random.default_rng(0).random((12, 14, 3)) * 255).astype(np.uint8)
    compiled = selective_search(image, strategies=[Strategy("hsv", 10, "CTSF"), Strategy("lab", 10, "TSF")], seed=1)
    assert json.loads(run.stdout) == compiled.astype(int).tolist()


def test_far_more_threads_than_work_runs_at_once():
    # n_threads beyond the number of colour spaces must not loop over the unused threads (10**18
    # passes of "start the next colour space" would never end)
    import threading

    image = np.random.default_rng(0).integers(0, 256, size=(6, 7, 3), dtype=np.uint8)
    result = []
    worker = threading.Thread(target=lambda: result.append(selective_search(image, mode="fast", n_threads=10**18)), daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert result, "selective_search with n_threads=10**18 did not return"
    np.testing.assert_array_equal(result[0], selective_search(image, mode="fast"))


def test_an_interrupted_run_cancels_the_queued_strategies(monkeypatch):
    # Ctrl-C (KeyboardInterrupt) or an error in one job must not leave the whole strategy set running:
    # with one thread, "fast" queues four (colour space, k) jobs; the first one is interrupted, the
    # second and third may run meanwhile, and the fourth is cancelled
    import importlib
    import time

    module = importlib.import_module("scratchdet.proposals.selective_search")  # the module, not the function

    started = []
    real = module._group_one_segmentation

    def interrupted_then_slow(*args, **kwargs):
        started.append(args[2])
        if len(started) == 1:
            raise KeyboardInterrupt
        time.sleep(0.2)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "_group_one_segmentation", interrupted_then_slow)
    image = np.random.default_rng(0).integers(0, 256, size=(6, 7, 3), dtype=np.uint8)
    with pytest.raises(KeyboardInterrupt):
        selective_search(image, mode="fast", n_threads=1)
    assert len(started) <= 3, f"{len(started)} of the 4 jobs ran after the interrupt"
