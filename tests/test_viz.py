"""Figures: each function writes a readable picture, atomically, and rejects bad input."""

import numpy as np
import pytest
from matplotlib.image import imread

from scratchdet import viz
from scratchdet.errors import InvalidArgumentError
from scratchdet.proposals import felzenszwalb, selective_search


@pytest.fixture
def image(rng):
    base = np.kron(rng.integers(0, 255, size=(3, 4, 3)), np.ones((8, 8, 1)))  # (24, 32, 3) blocks
    return base.astype(np.uint8)


def _is_png(path):
    picture = imread(path)
    return picture.ndim == 3 and picture.shape[0] > 10 and picture.shape[1] > 10


def test_plot_segments_writes_a_png(tmp_path, image):
    labels = felzenszwalb(image, scale=50, min_size=0)
    assert viz.plot_segments(image, labels, tmp_path / "seg.png") == tmp_path / "seg.png"
    assert _is_png(tmp_path / "seg.png")
    assert [p.name for p in tmp_path.iterdir()] == ["seg.png"], "no temporary file left behind"


def test_segment_mean_colours_paints_each_segment_with_its_mean():
    image = np.array([[[0, 0, 0], [10, 20, 30], [200, 200, 200]]], np.uint8)
    labels = np.array([[0, 0, 1]])
    np.testing.assert_array_equal(viz.segment_mean_colours(image, labels), [[[5, 10, 15], [5, 10, 15], [200, 200, 200]]])


def test_plot_proposals_and_hierarchy_write_pngs(tmp_path, image):
    boxes, (hierarchy,) = selective_search(image, mode="single", return_hierarchy=True)
    viz.plot_proposals(image, boxes, tmp_path / "top.png", max_boxes=5)
    viz.plot_hierarchy(image, hierarchy, tmp_path / "tree.png")
    assert _is_png(tmp_path / "top.png") and _is_png(tmp_path / "tree.png")


def test_plot_recall_curves_writes_a_png(tmp_path):
    curves = {"selective search": ([10, 100, 1000], [0.3, 0.7, 0.9]), "windows": ([10, 100, 1000], [0.1, 0.2, 0.4])}
    viz.plot_recall_curves(curves, tmp_path / "recall.png")
    assert _is_png(tmp_path / "recall.png")


def test_failed_plot_leaves_no_file(tmp_path, image):
    with pytest.raises(InvalidArgumentError):
        viz.plot_segments(image, np.zeros((3, 3), int), tmp_path / "seg.png")
    with pytest.raises(InvalidArgumentError):
        viz.plot_recall_curves({"bad": ([1, 2], [0.5])}, tmp_path / "r.png")
    assert list(tmp_path.iterdir()) == []


def test_rejects_non_rgb_image(tmp_path):
    with pytest.raises(InvalidArgumentError, match="RGB"):
        viz.plot_proposals(np.zeros((5, 5)), np.zeros((0, 4)), tmp_path / "x.png")


def test_plot_path_without_extension_is_written_as_png(tmp_path, image):
    viz.plot_proposals(image, np.array([[1, 1, 5, 5]]), tmp_path / "top")
    assert _is_png(tmp_path / "top") and [p.name for p in tmp_path.iterdir()] == ["top"]


@pytest.mark.parametrize("name, message", [("top.xyz", "format 'xyz'"), ("top.tmp", "format 'tmp'")])
def test_unsupported_plot_format_is_an_invalid_argument_and_leaves_no_file(tmp_path, image, name, message):
    with pytest.raises(InvalidArgumentError, match=message):
        viz.plot_proposals(image, np.zeros((0, 4)), tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_plot_onto_a_directory_is_an_invalid_argument(tmp_path, image):
    (tmp_path / "top.png").mkdir()
    with pytest.raises(InvalidArgumentError, match="is a directory"):
        viz.plot_proposals(image, np.zeros((0, 4)), tmp_path / "top.png")
    assert [p.name for p in tmp_path.iterdir()] == ["top.png"]


@pytest.mark.parametrize(
    "boxes, kwargs, match",
    [(np.zeros((6, 2)), {}, r"\(N, 4\)"), (np.zeros((2, 4)), {"max_boxes": -1}, "max_boxes"),
     (np.zeros((2, 4)), {"max_boxes": 1.5}, "max_boxes")],
    ids=["pairs-not-boxes", "negative-max-boxes", "fractional-max-boxes"],
)
def test_plot_proposals_rejects_boxes_that_are_not_n_by_4_and_bad_counts(tmp_path, image, boxes, kwargs, match):
    with pytest.raises(InvalidArgumentError, match=match):
        viz.plot_proposals(image, boxes, tmp_path / "top.png", **kwargs)


@pytest.mark.parametrize("labels", [np.full((24, 32), -1), np.full((24, 32), 0.5)], ids=["negative", "float"])
def test_segment_pictures_reject_labels_that_are_not_non_negative_integers(tmp_path, image, labels):
    with pytest.raises(InvalidArgumentError, match="labels"):
        viz.plot_segments(image, labels, tmp_path / "seg.png")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("steps", [(1.5,), (-0.5,), (), ("a",)], ids=["above-one", "negative", "empty", "text"])
def test_plot_hierarchy_rejects_steps_outside_zero_one(tmp_path, image, steps):
    _, (hierarchy,) = selective_search(image, mode="single", return_hierarchy=True)
    with pytest.raises(InvalidArgumentError, match="steps"):
        viz.plot_hierarchy(image, hierarchy, tmp_path / "tree.png", steps=steps)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("steps", [None, object()], ids=["none", "not-a-sequence"])
def test_plot_hierarchy_steps_that_are_no_sequence_are_an_invalid_argument(tmp_path, image, steps):
    _, (hierarchy,) = selective_search(image, mode="single", return_hierarchy=True)
    with pytest.raises(InvalidArgumentError, match="steps"):
        viz.plot_hierarchy(image, hierarchy, tmp_path / "tree.png", steps=steps)
    assert list(tmp_path.iterdir()) == []


def test_plot_hierarchy_takes_one_step_as_a_number(tmp_path, image):
    _, (hierarchy,) = selective_search(image, mode="single", return_hierarchy=True)
    assert viz.plot_hierarchy(image, hierarchy, tmp_path / "tree.png", steps=0.5) == tmp_path / "tree.png"
    assert (tmp_path / "tree.png").stat().st_size > 0


@pytest.mark.parametrize("curves", [[([1, 2], [0.1, 0.2])], {"ours": 5}, {"ours": ([1], [0.5], [2])}],
                         ids=["list-not-dict", "number-not-pair", "triple-not-pair"])
def test_plot_recall_curves_rejects_curves_that_are_not_name_to_pair(tmp_path, curves):
    with pytest.raises(InvalidArgumentError, match="curve"):
        viz.plot_recall_curves(curves, tmp_path / "recall.png")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("shape", [(60000, 2), (2, 60000)], ids=["tall-strip", "wide-strip"])
def test_pictures_of_a_thin_strip_keep_a_bounded_size(tmp_path, shape):
    # the figure follows the image's shape only up to MAX_FIGURE_ASPECT: a 60000 x 2 strip would
    # otherwise need a figure 300,000 inches tall, which matplotlib refuses
    image = np.zeros(shape + (3,), np.uint8)
    image[: shape[0] // 2, : shape[1] // 2] = 200
    labels = felzenszwalb(image, scale=50, min_size=0)
    boxes, (hierarchy,) = selective_search(image, mode="single", return_hierarchy=True)
    viz.plot_proposals(image, boxes, tmp_path / "top.png")
    viz.plot_segments(image, labels, tmp_path / "seg.png")
    viz.plot_hierarchy(image, hierarchy, tmp_path / "tree.png")
    for name in ("top.png", "seg.png", "tree.png"):
        picture = imread(tmp_path / name)
        assert max(picture.shape[:2]) <= 4000, f"{name} is {picture.shape[1]}x{picture.shape[0]} pixels"


def test_titles_are_drawn_literally_even_with_dollar_signs(tmp_path, image):
    # matplotlib reads text between two dollar signs as mathematics, and fails on most file names
    labels = felzenszwalb(image, scale=50, sigma=0.5, min_size=5)
    viz.plot_segments(image, labels, tmp_path / "seg.png", title="cost_$1_and_$2.png")
    viz.plot_proposals(image, np.array([[0, 0, 8, 8]], np.float32), tmp_path / "top.png", title=r"a$\x$.png")
    assert _is_png(tmp_path / "seg.png") and _is_png(tmp_path / "top.png")


def test_formats_that_need_other_programs_are_refused_before_drawing():
    with pytest.raises(InvalidArgumentError, match="cannot write pictures of format 'pgf'"):
        viz.figure_format("figure.pgf", option="--plot")


def test_float_and_16_bit_images_are_scaled_as_the_loader_scales_them(image):
    labels = felzenszwalb(image, scale=50, sigma=0.5, min_size=5)
    expected = viz.segment_mean_colours(image, labels)
    np.testing.assert_array_equal(viz.segment_mean_colours(image / 255.0, labels), expected)  # [0, 1], not black
    np.testing.assert_array_equal(viz.segment_mean_colours(image.astype(np.uint16) * 257, labels), expected)


def test_sparse_segment_ids_are_painted_without_a_table_of_every_id(image):
    labels = np.zeros(image.shape[:2], np.int64)
    labels[:, 16:] = 2**40  # np.bincount would ask for 8 TiB
    painted = viz.segment_mean_colours(image, labels)
    np.testing.assert_array_equal(painted[0, 0], np.round(image[:, :16].reshape(-1, 3).mean(axis=0)))
    np.testing.assert_array_equal(painted[0, 31], np.round(image[:, 16:].reshape(-1, 3).mean(axis=0)))


def test_proposal_boxes_follow_the_pixel_convention(tmp_path, monkeypatch):
    """Pixel (i, j) covers [j, j+1) x [i, i+1): the box (0, 0, W, H) is the image's outline, not half a pixel off."""
    figures = []
    monkeypatch.setattr(viz, "_save", lambda fig, path, fmt=None: figures.append(fig))
    viz.plot_proposals(np.zeros((6, 8, 3), np.uint8), np.array([[0.0, 0.0, 8.0, 6.0]]), tmp_path / "p.png")
    (fig,) = figures
    fig.canvas.draw()
    (ax,) = fig.axes
    (patch,) = ax.patches
    np.testing.assert_allclose(patch.get_window_extent().get_points(), ax.images[0].get_window_extent().get_points(), atol=1.5)
