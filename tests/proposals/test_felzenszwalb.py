"""Felzenszwalb-Huttenlocher segmentation: the paper's guarantees, the pieces, and scikit-image."""

import json
import pathlib

import numpy as np
import pytest
import scipy.ndimage as ndi

from scratchdet.errors import InvalidArgumentError
from scratchdet.kernels.cpu import proposals as kernels
from scratchdet.proposals import adjusted_rand_index, felzenszwalb, grid_graph

REFERENCE = pathlib.Path(__file__).resolve().parents[2] / "reference" / "outputs"


def _kruskal_internal_difference(n_pixels, a, b, w, labels):
    """Int(C) of every segment, computed independently: the heaviest edge of the minimum spanning
    tree of the subgraph induced by C (Kruskal on the edges inside C)."""
    inside = labels[a] == labels[b]
    order = np.argsort(w[inside], kind="stable")
    a_in, b_in, w_in = a[inside][order], b[inside][order], w[inside][order].astype(np.float64)
    parent = np.arange(n_pixels)

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    internal = np.zeros(labels.max() + 1)
    for p, q, weight in zip(a_in, b_in, w_in):
        rp, rq = find(p), find(q)
        if rp != rq:
            parent[rp] = rq
            internal[labels[p]] = max(internal[labels[p]], weight)
    return internal


def _images(rng, photos):
    noise = (rng.random((20, 24, 3)) * 255).astype(np.uint8)
    blocks = np.kron(rng.integers(0, 255, size=(4, 5, 3)), np.ones((6, 6, 1))).astype(np.uint8)
    return {"noise": noise, "blocks": blocks, "chelsea": photos["chelsea"][:32, :40].copy()}


@pytest.mark.parametrize("k", [20.0, 150.0])
@pytest.mark.parametrize("name", ["noise", "blocks", "chelsea"])
def test_adjacent_segments_satisfy_the_boundary_predicate_before_min_size_merge(rng, photos, name, k):
    # Felzenszwalb and Huttenlocher 2004, Theorem 1: for adjacent C1, C2 the lightest edge between
    # them is heavier than MInt(C1, C2) = min(Int(C1) + k/|C1|, Int(C2) + k/|C2|).
    image = _images(rng, photos)[name]
    labels = felzenszwalb(image, scale=k, sigma=0.8, min_size=0).ravel()
    a, b, w = grid_graph(image, sigma=0.8)
    sizes = np.bincount(labels).astype(np.float64)
    internal = _kruskal_internal_difference(labels.size, a, b, w, labels)
    cross = labels[a] != labels[b]
    la, lb, wc = labels[a][cross], labels[b][cross], w[cross].astype(np.float64)
    n = labels.max() + 1
    key = np.minimum(la, lb) * n + np.maximum(la, lb)
    lightest = {}
    for kk, weight in zip(key, wc):
        lightest[kk] = min(lightest.get(kk, np.inf), weight)
    assert len(lightest) > 0, "the test image should have more than one segment"
    for kk, dif in lightest.items():
        c1, c2 = divmod(kk, n)
        m_int = min(internal[c1] + k / sizes[c1], internal[c2] + k / sizes[c2])
        assert dif > m_int, f"segments {c1} and {c2}: Dif={dif} <= MInt={m_int} (too fine)"


@pytest.mark.parametrize("min_size", [0, 30])
@pytest.mark.parametrize("name", ["noise", "blocks", "chelsea"])
def test_every_segment_is_connected(rng, photos, name, min_size):
    image = _images(rng, photos)[name]
    labels = felzenszwalb(image, scale=50.0, sigma=0.8, min_size=min_size)
    eight = np.ones((3, 3), dtype=bool)
    for s in range(labels.max() + 1):
        _, n_parts = ndi.label(labels == s, structure=eight)
        assert n_parts == 1, f"segment {s} has {n_parts} 8-connected parts"


@pytest.mark.parametrize("min_size", [10, 40])
def test_min_size_merges_every_small_segment(rng, photos, min_size):
    image = _images(rng, photos)["noise"]
    labels = felzenszwalb(image, scale=20.0, sigma=0.8, min_size=min_size)
    assert np.bincount(labels.ravel()).min() >= min_size


def test_labels_are_int32_numbered_in_raster_order(photos):
    labels = felzenszwalb(photos["coffee"], scale=100, sigma=0.8, min_size=20)
    assert labels.dtype == np.int32 and labels.shape == photos["coffee"].shape[:2]
    _, first = np.unique(labels.ravel(), return_index=True)
    assert np.all(np.diff(first) > 0), "segment ids should appear in raster order 0, 1, 2, ..."


def test_uniform_image_is_one_segment():
    assert felzenszwalb(np.full((10, 12, 3), 77, np.uint8), scale=1, min_size=0).max() == 0


def test_two_flat_halves_split_exactly_at_the_edge():
    image = np.zeros((8, 10, 3), np.uint8)
    image[:, 5:] = 200
    labels = felzenszwalb(image, scale=10, sigma=0.0, min_size=0)
    assert labels.max() == 1 and np.all(labels[:, :5] == 0) and np.all(labels[:, 5:] == 1)


def test_edge_exactly_at_the_threshold_joins():
    # the predicate joins when w <= MInt (eq. 4): two single pixels 10 apart (Int 0, |C| = 1) join at
    # k = 10 but not just below it, and with k = 0 equal pixels (w = 0) still join
    image = np.array([[0, 10]], np.uint8)
    assert felzenszwalb(image, scale=10, sigma=0, min_size=0).tolist() == [[0, 0]]
    assert felzenszwalb(image, scale=9.99, sigma=0, min_size=0).tolist() == [[0, 1]]
    assert felzenszwalb(np.full((3, 4), 7, np.uint8), scale=0, sigma=0, min_size=0).max() == 0


def test_segment_of_exactly_min_size_is_kept():
    # only segments *smaller* than min_size are merged: a 2-pixel segment survives min_size 2, not 3
    image = np.zeros((2, 4), np.uint8)
    image[:, 3] = 200  # a 6-pixel and a 2-pixel segment
    assert felzenszwalb(image, scale=1, sigma=0, min_size=2).tolist() == [[0, 0, 0, 1], [0, 0, 0, 1]]
    assert felzenszwalb(image, scale=1, sigma=0, min_size=3).max() == 0


def test_grid_graph_weights_are_euclidean_colour_distances(rng):
    image = rng.random((5, 7, 3)).astype(np.float32)
    a, b, w = grid_graph(image, sigma=0.0)
    pixels = image.reshape(-1, 3).astype(np.float64) * 255.0
    assert a.size == 4 * 5 * 7 - 3 * 5 - 3 * 7 + 2
    np.testing.assert_allclose(w, np.linalg.norm(pixels[a] - pixels[b], axis=1), rtol=1e-5, atol=1e-4)
    rows_a, cols_a = np.divmod(a, 7)
    rows_b, cols_b = np.divmod(b, 7)
    assert np.all(np.maximum(abs(rows_a - rows_b), abs(cols_a - cols_b)) == 1), "only 8-neighbours are joined"
    pairs = set(zip(np.minimum(a, b), np.maximum(a, b)))
    assert len(pairs) == a.size, "each neighbour pair appears once"


@pytest.mark.parametrize("sigma", [0.5, 0.8, 2.0])
def test_smoothing_matches_scipy_gaussian_filter(rng, sigma):
    image = (rng.random((9, 13, 3)) * 255).astype(np.float32)
    g = kernels.gaussian_kernel(sigma)
    ours = kernels.separable_correlate(image, g, g)
    theirs = ndi.gaussian_filter(image.astype(np.float64), sigma=(sigma, sigma, 0), mode="reflect")
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-3)


def test_gaussian_derivative_of_a_ramp_is_its_slope():
    ramp = np.tile(np.arange(12, dtype=np.float32) * 3.0, (8, 1))[:, :, None]  # (8, 12, 1), slope 3 along x
    gx, gy = kernels.gaussian_gradients(ramp, 1.0)
    np.testing.assert_allclose(gx[:, 4:8], 3.0, rtol=1e-5)
    np.testing.assert_allclose(gy, 0.0, atol=1e-4)


@pytest.mark.parametrize("n", [1, 7, 5000])
def test_radix_argsort_is_a_stable_sort(rng, n):
    weights = rng.integers(0, 20, size=n).astype(np.float32) * np.float32(0.25)  # many ties
    weights[:: 7] = np.inf
    order, sorted_weights = kernels.radix_argsort(weights)
    np.testing.assert_array_equal(order, np.argsort(weights, kind="stable"))
    np.testing.assert_array_equal(sorted_weights, weights[order])


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((1, 1, 3), np.uint8), "at least 2 pixels"),
        (np.zeros((4, 4, 3, 2), np.uint8), "shape"),
        (np.full((3, 3), np.nan), "NaN"),
        (np.array([[0.0, 1e300], [1e300, 0.0]]), "too large"),  # beyond float32 once on the 0..255 scale
        (np.array([[0.0, 1e18], [1e18, 0.0]]), "too large"),  # its colour distances would overflow float32
    ],
)
def test_rejects_bad_images(image, message):
    with pytest.raises(InvalidArgumentError, match=message):
        felzenszwalb(image)


@pytest.mark.parametrize(
    "kwargs",
    [{"scale": -1}, {"sigma": -0.5}, {"min_size": -3}, {"sigma": float("inf")}, {"scale": float("inf")},
     {"scale": "big"}, {"sigma": None}, {"min_size": 2.5}, {"sigma": 1e9}, {"min_size": float("nan")},
     {"min_size": float("inf")}],
)
def test_rejects_bad_arguments(kwargs):
    with pytest.raises(InvalidArgumentError, match=next(iter(kwargs))):
        felzenszwalb(np.zeros((4, 4, 3), np.uint8), **kwargs)


def test_greyscale_uint16_and_float_images_segment_like_their_uint8_version(rng):
    grey8 = (rng.random((16, 16)) * 255).astype(np.uint8)
    expected = felzenszwalb(grey8, scale=30, min_size=0)
    np.testing.assert_array_equal(felzenszwalb(grey8.astype(np.float64) / 255.0, scale=30, min_size=0), expected)
    np.testing.assert_array_equal(felzenszwalb(grey8.astype(np.uint16) * 257, scale=30, min_size=0), expected)


@pytest.mark.parametrize("min_size", [10**3, 10**20], ids=["above-pixel-count", "above-int64"])
def test_min_size_above_the_pixel_count_gives_one_segment(rng, min_size):
    image = rng.integers(0, 256, size=(6, 7, 3), dtype=np.uint8)
    assert felzenszwalb(image, scale=1, min_size=min_size).max() == 0


def test_bool_image_segments_like_its_uint8_version_true_is_255():
    mask = np.zeros((24, 24), bool)
    mask[6:18, 4:14] = True
    expected = felzenszwalb(mask.astype(np.uint8) * 255, scale=100, min_size=10)
    assert expected.max() + 1 >= 2  # the rectangle is its own segment
    np.testing.assert_array_equal(felzenszwalb(mask, scale=100, min_size=10), expected)


@pytest.mark.parametrize("settings", [(100.0, 0.8, 20), (300.0, 0.8, 50), (50.0, 0.5, 10)])
def test_agrees_with_scikit_image_on_real_photographs(photos, settings):
    skimage_segmentation = pytest.importorskip("skimage.segmentation")
    scale, sigma, min_size = settings
    scores = []
    for name, image in photos.items():
        ours = felzenszwalb(image, scale=scale, sigma=sigma, min_size=min_size)
        theirs = skimage_segmentation.felzenszwalb(image, scale=scale, sigma=sigma, min_size=min_size)
        n_ours, n_theirs = ours.max() + 1, theirs.max() + 1
        assert abs(n_ours - n_theirs) <= 0.15 * n_theirs, f"{name}: {n_ours} segments, scikit-image {n_theirs}"
        scores.append(adjusted_rand_index(ours, theirs))
    assert np.mean(scores) >= 0.7, f"adjusted Rand indices {scores}"


def test_agrees_with_frozen_scikit_image_segmentations():
    meta_path = REFERENCE / "proposals_felzenszwalb.json"
    if not meta_path.exists():
        pytest.fail(f"missing {meta_path}: run python reference/generate.py proposals")
    meta = json.loads(meta_path.read_text())
    arrays = np.load(REFERENCE / "proposals_felzenszwalb.npz", allow_pickle=False)
    for case in meta["cases"]:
        image = arrays[f"{case['id']}_image"]
        theirs = arrays[f"{case['id']}_labels"]
        ours = felzenszwalb(image, scale=case["scale"], sigma=case["sigma"], min_size=case["min_size"])
        n_ours, n_theirs = ours.max() + 1, theirs.max() + 1
        assert abs(n_ours - n_theirs) <= 0.15 * n_theirs, f"{case['id']}: {n_ours} vs {n_theirs} segments"
        assert adjusted_rand_index(ours, theirs) >= 0.7, case["id"]


def test_adjusted_rand_index_of_known_partitions():
    a = np.array([0, 0, 1, 1])
    assert adjusted_rand_index(a, a) == 1.0
    assert adjusted_rand_index(a, np.array([5, 5, 9, 9])) == 1.0  # the names of segments do not matter
    assert adjusted_rand_index(a, np.array([0, 1, 0, 1])) == pytest.approx(-0.5)
    # the example of Hubert and Arabie as computed by sklearn: ARI([0,0,1,2], [0,0,1,1]) = 0.5714...
    assert adjusted_rand_index([0, 0, 1, 2], [0, 0, 1, 1]) == pytest.approx(0.5714285714)


def test_adjusted_rand_index_needs_two_labellings_of_one_shape_and_some_pixels():
    with pytest.raises(InvalidArgumentError, match=r"differ in shape: \(2, 3\) and \(3, 2\)"):  # (the sizes alone were compared)
        adjusted_rand_index(np.zeros((2, 3), int), np.zeros((3, 2), int))
    with pytest.raises(InvalidArgumentError, match="the labellings are empty"):  # (NumPy's error about a reduction)
        adjusted_rand_index([], [])
