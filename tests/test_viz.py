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


def _one_detection(box):
    from scratchdet.models import Detections

    return Detections(np.array([box], np.float64), np.array([0.9]), np.array([1]))


@pytest.mark.parametrize(
    "box, classes",
    [([-400, -400, 60, 60], None), ([95, 50, 99, 60], None), ([10, 10, 60, 60], ["x" * 300])],
    ids=["box-beginning-outside", "box-at-the-right-edge", "long-class-name"],
)
def test_detection_labels_never_widen_the_picture(tmp_path, box, classes):
    """A label is placed in the image and cut at its edges (drawn at a corner outside, with the tight
    bounding box of the saved figure, it grew a 100-pixel picture to 2732 pixels)."""
    image = np.zeros((100, 100, 3), np.uint8)
    inside = imread(viz.plot_detections(image, _one_detection([10, 10, 60, 60]), tmp_path / "inside.png"))
    ours = imread(viz.plot_detections(image, _one_detection(box), tmp_path / "ours.png", classes=classes))
    assert ours.shape == inside.shape


def test_plot_detections_names_what_is_wrong_with_its_detections(tmp_path):
    image = np.zeros((8, 8, 3), np.uint8)
    for images, detections in ((image, [_one_detection([0, 0, 4, 4])]), ([image], _one_detection([0, 0, 4, 4]))):
        with pytest.raises(InvalidArgumentError, match="detections must be, for each image, one object with boxes"):
            viz.plot_detections(images, detections, tmp_path / "d.png")
    assert not list(tmp_path.iterdir())


def test_one_image_takes_its_title_and_ground_truth_as_lists_of_one(tmp_path, monkeypatch):
    titles = []
    monkeypatch.setattr("matplotlib.axes.Axes.set_title", lambda ax, text, **kwargs: titles.append(text))
    viz.plot_detections(np.zeros((8, 8, 3), np.uint8), _one_detection([0, 0, 4, 4]), tmp_path / "d.png", titles=["abc"],
                        ground_truth=[np.array([[1, 1, 5, 5]])])
    assert titles == ["abc"]  # (it drew "['abc']")


def test_curve_names_are_legend_entries_drawn_literally(tmp_path, monkeypatch):
    """Names with dollar signs once went to mathtext (and failed to parse), and one beginning with "_"
    was left out of the legend."""
    labels = []
    real_legend = __import__("matplotlib.axes", fromlist=["Axes"]).Axes.legend

    def legend(ax, *args, **kwargs):
        labels.extend(ax.get_legend_handles_labels()[1])
        return real_legend(ax, *args, **kwargs)

    monkeypatch.setattr("matplotlib.axes.Axes.legend", legend)
    curves = {"_sw": ([1, 10], [0.1, 0.5]), "cost $1 and $2": ([1, 10], [0.2, 0.6]), "$\\undefined$": ([1, 10], [0.3, 0.4])}
    viz.plot_recall_curves(curves, tmp_path / "r.png")
    assert labels == [" _sw", "cost \\$1 and \\$2", "\\$\\undefined\\$"]
    with pytest.raises(InvalidArgumentError, match="iou_threshold must be a number"):
        viz.plot_recall_curves(curves, tmp_path / "r.png", iou_threshold="0.5")
