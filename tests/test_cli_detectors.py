"""`scratchdet data shapes`, `train`, `detect` and `demo`: the files they write, a train -> detect round
trip, exact resuming, and one-line errors with exit status 2 that leave nothing written."""

import json
import os
import re
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest

from scratchdet import backend, nn, viz
from scratchdet.cli import main
from scratchdet.commands.demo import FILES
from scratchdet.data.coco import read_detections, read_ground_truth
from scratchdet.data.shapes import shapes_dataset
from scratchdet.errors import InvalidArgumentError
from scratchdet.models import RCNN, Detections, FastRCNN

# a tiny dataset: 4 images of 48 x 48, and 3 training steps
N_IMAGES, SIDE, STEPS = 4, 48, 3
SHAPES = ((1, "rectangle"), (2, "ellipse"), (3, "triangle"))  # the shapes' category ids and names


def files_under(path):
    """Every file and directory below `path`, as sorted relative names (to check nothing was written)."""
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def assert_one_line_error(capsys, command, message):
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith(f"scratchdet {command}: error: "), captured.err
    assert message in captured.err, captured.err


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory):
    """A dataset written by `scratchdet data shapes`, its categories renumbered 10, 20, 30 so that the
    mapping of labels 1..K back to category ids shows."""
    directory = tmp_path_factory.mktemp("shapes")
    assert main(["data", "shapes", str(directory), "--images", str(N_IMAGES), "--size", str(SIDE), str(SIDE), "--seed", "3"]) == 0
    gt = json.loads((directory / "annotations.json").read_text())
    for category in gt["categories"]:
        category["id"] *= 10
    for annotation in gt["annotations"]:
        annotation["category_id"] *= 10
    (directory / "gt10.json").write_text(json.dumps(gt))
    return directory


@pytest.fixture(scope="module")
def trained(shapes_dir, tmp_path_factory):
    """Fast R-CNN weights trained for 3 steps on `shapes_dir` by `scratchdet train`, and its loss log."""
    out = tmp_path_factory.mktemp("trained")
    status = main(["train", "--gt", str(shapes_dir / "gt10.json"), "--images", str(shapes_dir), "--model", "fast-rcnn",
                   "--steps", str(STEPS), "--out", str(out / "weights.npz"), "--log", str(out / "losses.json"), "--no-progress"])
    assert status == 0
    return out / "weights.npz", out / "losses.json"


# -- data shapes ---------------------------------------------------------------------------------------


def test_data_shapes_writes_the_pngs_its_ground_truth_names(tmp_path, capsys):
    out = tmp_path / "shapes"
    assert main(["data", "shapes", str(out), "--images", "3", "--size", "40", "56", "--seed", "7"]) == 0
    assert "wrote 3 images of 56x40" in capsys.readouterr().out
    gt = read_ground_truth(out / "annotations.json")
    assert sorted(p.name for p in out.iterdir()) == sorted(["annotations.json"] + [im["file_name"] for im in gt["images"]])
    expected = shapes_dataset(3, image_size=(40, 56), size=(6, 16), seed=7)  # sides 1/6 to 5/12 of 40
    assert gt == json.loads(json.dumps(expected.to_coco()))
    for entry, image in zip(gt["images"], expected.images):
        np.testing.assert_array_equal(iio.imread(out / entry["file_name"]), image)  # PNG is lossless


def test_data_shapes_shows_progress_unless_told_not_to(tmp_path, capsys):
    assert main(["data", "shapes", str(tmp_path / "a"), "--images", "2"]) == 0
    assert "data shapes: 100%" in capsys.readouterr().err
    assert main(["data", "shapes", str(tmp_path / "b"), "--images", "2", "--no-progress"]) == 0
    assert capsys.readouterr().err == ""


def test_data_shapes_that_cannot_write_exits_2_and_removes_the_images_it_wrote(tmp_path, capsys, monkeypatch):
    (tmp_path / "notes.txt").write_text("mine")
    written = []

    def imwrite(path, image, **kwargs):  # the second image meets a full disk
        if written:
            raise OSError(28, "No space left on device", str(path))
        written.append(path)
        (tmp_path / path).write_bytes(b"png")

    monkeypatch.setattr(iio, "imwrite", imwrite)
    assert main(["data", "shapes", str(tmp_path), "--images", "3", "--force", "--no-progress"]) == 2
    assert_one_line_error(capsys, "data", f"cannot write {tmp_path / 'shapes_000002.png'}: No space left on device")
    assert files_under(tmp_path) == ["notes.txt"]


def _contents(path):
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()], ids=["full-disk", "ctrl-c"])
def test_data_shapes_forced_over_a_dataset_that_fails_while_drawing_leaves_it_whole(tmp_path, capsys, monkeypatch, error):
    # the new images wait in temporary files until all are drawn: the earlier images still match their
    # annotations (the images replaced in place once kept the new pixels under the old boxes)
    assert main(["data", "shapes", str(tmp_path), "--images", "3", "--seed", "0", "--no-progress"]) == 0
    before = _contents(tmp_path)
    real_imwrite, written = iio.imwrite, []

    def imwrite(path, image, **kwargs):  # the third image of the new run fails
        if len(written) == 2:
            raise error
        written.append(path)
        real_imwrite(path, image, **kwargs)

    monkeypatch.setattr(iio, "imwrite", imwrite)
    arguments = ["data", "shapes", str(tmp_path), "--images", "5", "--seed", "1", "--force", "--no-progress"]
    if isinstance(error, KeyboardInterrupt):
        assert main(arguments) == 130
    else:
        assert main(arguments) == 2
        assert_one_line_error(capsys, "data", f"cannot write {tmp_path / 'shapes_000003.png'}: No space left on device")
    assert _contents(tmp_path) == before


def test_data_shapes_forced_over_a_dataset_drops_its_annotations_before_replacing_its_images(tmp_path, capsys, monkeypatch):
    # a failure once the images are in place leaves no annotations.json: none that names the new images
    # with the earlier boxes
    assert main(["data", "shapes", str(tmp_path), "--images", "2", "--seed", "0", "--no-progress"]) == 0
    import scratchdet.data.coco as coco

    def write_ground_truth(path, gt):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(coco, "write_ground_truth", write_ground_truth)
    assert main(["data", "shapes", str(tmp_path), "--images", "2", "--seed", "1", "--force", "--no-progress"]) == 2
    assert_one_line_error(capsys, "data", "cannot write")
    assert files_under(tmp_path) == ["shapes_000001.png", "shapes_000002.png"]


def test_data_shapes_refuses_a_non_empty_directory_unless_forced(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["data", "shapes", str(tmp_path), "--images", "2"]) == 2
    assert_one_line_error(capsys, "data", "is not empty")
    assert files_under(tmp_path) == ["notes.txt"]
    assert main(["data", "shapes", str(tmp_path), "--images", "2", "--force"]) == 0
    assert files_under(tmp_path) == ["annotations.json", "notes.txt", "shapes_000001.png", "shapes_000002.png"]
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "arguments, message",
    [(["--images", "0"], "--images must be a positive"), (["--images", "2", "--size", "8", "48"], "--size must be"),
     (["--images", "2", "--seed", "-1"], "--seed must be >= 0")],
    ids=["no-images", "too-small", "negative-seed"],
)
def test_data_shapes_bad_options_exit_2(tmp_path, capsys, arguments, message):
    assert main(["data", "shapes", str(tmp_path / "out"), *arguments]) == 2
    assert_one_line_error(capsys, "data", message)
    assert files_under(tmp_path) == []


def test_data_shapes_into_a_file_exits_2(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert main(["data", "shapes", str(tmp_path / "file"), "--images", "1"]) == 2
    assert_one_line_error(capsys, "data", "is not a directory")


def test_data_shapes_into_an_empty_directory_name_exits_2_and_writes_nothing(tmp_path, capsys, monkeypatch):
    # "" is no directory: it must not write into the current one (past the check that it is empty)
    (tmp_path / "notes.txt").write_text("mine")
    monkeypatch.chdir(tmp_path)
    assert main(["data", "shapes", "", "--images", "1", "--no-progress"]) == 2
    assert_one_line_error(capsys, "data", "OUT_DIR must name a directory")
    assert files_under(tmp_path) == ["notes.txt"]


def test_data_shapes_draws_and_writes_one_image_at_a_time(tmp_path, monkeypatch):
    # a large dataset must not be drawn whole in memory before the first file is written
    import scratchdet.data.shapes as shapes

    drawn, drawn_when_written = [], []
    real_scene, real_imwrite = shapes._scene, iio.imwrite
    monkeypatch.setattr(shapes, "_scene", lambda *args: drawn.append(1) or real_scene(*args))
    monkeypatch.setattr(iio, "imwrite", lambda *args, **kwargs: drawn_when_written.append(len(drawn)) or real_imwrite(*args, **kwargs))
    assert main(["data", "shapes", str(tmp_path / "out"), "--images", "3", "--size", "16", "16", "--no-progress"]) == 0
    assert drawn_when_written == [1, 2, 3]


def test_data_shapes_without_memory_for_the_images_exits_2_and_removes_what_it_wrote(tmp_path, capsys, monkeypatch):
    import scratchdet.data.shapes as shapes

    real = shapes.shapes_dataset
    calls = []

    def out_of_memory_at_the_second(*args, **kwargs):  # as numpy fails for --size 100000 100000
        calls.append(1)
        if len(calls) == 2:
            raise MemoryError("Unable to allocate 149. GiB for an array")
        return real(*args, **kwargs)

    monkeypatch.setattr(shapes, "shapes_dataset", out_of_memory_at_the_second)
    assert main(["data", "shapes", str(tmp_path / "out" / "new"), "--images", "3", "--size", "16", "16", "--no-progress"]) == 2
    assert_one_line_error(capsys, "data", "not enough memory")
    assert files_under(tmp_path) == [], "the image written and the directories made for it are removed"


# -- train and detect ----------------------------------------------------------------------------------


def test_train_writes_loadable_weights_with_the_category_ids_and_a_loss_log(trained, shapes_dir):
    weights, log = trained
    model, metadata = nn.load(weights, with_metadata=True)
    assert isinstance(model, FastRCNN)
    assert model.classes == ("rectangle", "ellipse", "triangle")
    assert metadata["extra"]["category_ids"] == [10, 20, 30]
    history = json.loads(log.read_text())
    assert history["steps"] == list(range(STEPS))
    assert set(history["losses"]) == {"total", "cls", "loc"}
    assert all(np.isfinite(history["losses"]["total"]))


def test_detect_writes_coco_detections_with_ground_truth_ids(trained, shapes_dir, tmp_path, capsys):
    weights, _ = trained
    gt_path = shapes_dir / "gt10.json"
    gt = read_ground_truth(gt_path)
    images = [shapes_dir / "shapes_000003.png", shapes_dir / "shapes_000001.png"]
    out = tmp_path / "dets.json"
    status = main(["detect", str(weights), *map(str, images), "--out", str(out), "--gt", str(gt_path), "--score", "0",
                   "--max", "7", "--plot", str(tmp_path / "pictures"), "--no-progress"])
    assert status == 0
    assert "detections in 2 image(s)" in capsys.readouterr().out
    dets = read_detections(out, gt)  # checks image and category ids against the ground truth
    id_of = {entry["file_name"]: entry["id"] for entry in gt["images"]}
    assert {d["image_id"] for d in dets} == {id_of["shapes_000003.png"], id_of["shapes_000001.png"]}
    assert {d["category_id"] for d in dets} <= {10, 20, 30}
    for image_id in {d["image_id"] for d in dets}:
        assert sum(d["image_id"] == image_id for d in dets) <= 7
    assert files_under(tmp_path / "pictures") == ["shapes_000001.png", "shapes_000003.png"]
    assert main(["evaluate", "--gt", str(gt_path), "--dets", str(out), "--metric", "voc"]) == 0


def test_detect_plot_draws_the_ground_truth_of_gt(trained, shapes_dir, tmp_path, monkeypatch):
    drawn = {}

    def plot_detections(image, detections, path, **kwargs):
        drawn[os.path.basename(path)] = kwargs["ground_truth"]

    monkeypatch.setattr(viz, "plot_detections", plot_detections)
    weights, _ = trained
    gt = read_ground_truth(shapes_dir / "gt10.json")
    assert main(["detect", str(weights), str(shapes_dir / "shapes_000002.png"), "--gt", str(shapes_dir / "gt10.json"),
                 "--out", str(tmp_path / "d.json"), "--plot", str(tmp_path), "--max-proposals", "50", "--no-progress"]) == 0
    image_id = next(entry["id"] for entry in gt["images"] if entry["file_name"] == "shapes_000002.png")
    expected = [[x, y, x + w, y + h] for a in gt["annotations"] if a["image_id"] == image_id for x, y, w, h in [a["bbox"]]]
    assert len(expected) > 0
    (truth,) = drawn.values()  # (drawn to a temporary file, renamed onto pictures' shapes_000002.png)
    np.testing.assert_allclose(truth, expected)


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()], ids=["full-disk", "ctrl-c"])
def test_detect_that_fails_while_drawing_writes_neither_pictures_nor_detections(trained, shapes_dir, tmp_path, monkeypatch, error):
    # the pictures and the detections of one run are written together or not at all
    real_plot, drawn = viz.plot_detections, []

    def plot_detections(image, detections, path, **kwargs):  # the second picture fails
        if drawn:
            raise error
        drawn.append(path)
        real_plot(image, detections, path, **kwargs)

    monkeypatch.setattr(viz, "plot_detections", plot_detections)
    weights, _ = trained
    images = [str(shapes_dir / "shapes_000001.png"), str(shapes_dir / "shapes_000002.png")]
    status = main(["detect", str(weights), *images, "--out", str(tmp_path / "d.json"), "--plot", str(tmp_path / "pictures"),
                   "--max-proposals", "50", "--no-progress"])
    assert status == (130 if isinstance(error, KeyboardInterrupt) else 2)
    assert len(drawn) == 1 and files_under(tmp_path) in ([], ["pictures"])


def test_detect_refuses_an_image_given_twice(trained, shapes_dir, tmp_path, capsys):
    # its detections would come twice (with --gt under one image id, so that evaluate counted both)
    weights, _ = trained
    image = shapes_dir / "shapes_000001.png"
    same = shapes_dir / ".." / shapes_dir.name / "shapes_000001.png"
    assert main(["detect", str(weights), str(image), str(same), "--out", str(tmp_path / "d.json")]) == 2
    assert_one_line_error(capsys, "detect", f"{image} and {same} are the same image; give each image once")
    copy = tmp_path / "copy" / "shapes_000001.png"  # another file of the same --gt entry
    copy.parent.mkdir()
    copy.write_bytes(image.read_bytes())
    assert main(["detect", str(weights), str(image), str(copy), "--gt", str(shapes_dir / "gt10.json"),
                 "--out", str(tmp_path / "d.json")]) == 2
    assert_one_line_error(capsys, "detect", f"{image} and {copy} are both image ")
    assert files_under(tmp_path) == ["copy", "copy/shapes_000001.png"]


def test_detect_with_weights_saved_without_category_ids(trained, shapes_dir, tmp_path, capsys):
    """Weights saved from Python by `nn.save` carry the class names alone: --gt gives the ids of its
    categories of those names; without --gt the labels are the ids, and a warning says so (this once
    happened silently, and --gt blamed the ground truth for missing ids 1..K)."""
    weights, _ = trained
    bare = tmp_path / "bare.npz"
    model = nn.load(weights)
    nn.save(bare, model, classes=model.classes)
    image = str(shapes_dir / "shapes_000001.png")
    assert main(["detect", str(bare), image, "--gt", str(shapes_dir / "gt10.json"), "--out", str(tmp_path / "a.json"),
                 "--score", "0", "--max-proposals", "50", "--no-progress"]) == 0
    assert {d["category_id"] for d in read_detections(tmp_path / "a.json")} <= {10, 20, 30}
    capsys.readouterr()
    assert main(["detect", str(bare), image, "--out", str(tmp_path / "b.json"), "--score", "0", "--max-proposals", "50",
                 "--no-progress"]) == 0
    assert "holds no COCO category ids: labels 1..3 are written as category ids" in capsys.readouterr().err
    assert {d["category_id"] for d in read_detections(tmp_path / "b.json")} <= {1, 2, 3}
    gt = json.loads((shapes_dir / "gt10.json").read_text())
    gt["categories"][0]["name"] = "square"
    (tmp_path / "renamed.json").write_text(json.dumps(gt))
    assert main(["detect", str(bare), image, "--gt", str(tmp_path / "renamed.json"), "--out", str(tmp_path / "c.json")]) == 2
    assert_one_line_error(capsys, "detect", f"{bare} holds no COCO category ids, and {tmp_path / 'renamed.json'} has no categories named")


def test_detect_without_gt_numbers_the_images_in_argument_order(trained, shapes_dir, tmp_path):
    weights, _ = trained
    out = tmp_path / "dets.json"
    images = [shapes_dir / "shapes_000004.png", shapes_dir / "shapes_000002.png"]
    assert main(["detect", str(weights), *map(str, images), "--out", str(out), "--score", "0", "--no-progress"]) == 0
    dets = read_detections(out)
    assert {d["image_id"] for d in dets} == {1, 2}
    # the detections of image 1 are those of the first argument: detecting it alone gives the same
    assert main(["detect", str(weights), str(images[0]), "--out", str(tmp_path / "one.json"), "--score", "0"]) == 0
    assert read_detections(tmp_path / "one.json") == [d for d in dets if d["image_id"] == 1]


@pytest.mark.parametrize("model, cls", [("rcnn", RCNN), ("fast-rcnn", FastRCNN)])
def test_train_on_images_of_different_sizes(tmp_path, capsys, model, cls):
    # two sizes cannot share a batch array: one image per step
    small = shapes_dataset(1, image_size=(40, 48), size=(8, 16), seed=1)
    large = shapes_dataset(1, image_size=(56, 64), size=(8, 16), seed=2)
    gt = small.to_coco()
    second = large.to_coco()
    second["images"][0].update(id=2, file_name="large.png")
    gt["images"] += second["images"]
    for annotation in second["annotations"]:
        gt["annotations"].append({**annotation, "id": len(gt["annotations"]) + 1, "image_id": 2})
    iio.imwrite(tmp_path / gt["images"][0]["file_name"], small.images[0])
    iio.imwrite(tmp_path / "large.png", large.images[0])
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    status = main(["train", "--gt", str(tmp_path / "gt.json"), "--images", str(tmp_path), "--model", model,
                   "--steps", "2", "--out", str(tmp_path / "w.npz"), "--no-progress"])
    assert status == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{model}: 2 images, 3 classes")
    assert re.search(r"; 2 steps in \d+\.\d s \(after \d+\.\d s of proposals\);", out), out  # (once one sum)
    assert isinstance(nn.load(tmp_path / "w.npz"), cls)


def test_train_leaves_out_the_images_without_boxes(shapes_dir, tmp_path, capsys):
    # an image of another size makes every step take one image: this one alone would have no RoIs (a
    # background RoI overlaps an object by IoU 0.1 to 0.5), and its step no loss to take the mean of
    gt = json.loads((shapes_dir / "annotations.json").read_text())
    gt["images"].append({"id": 99, "file_name": "empty.png", "width": 40, "height": 40})
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    for entry in gt["images"][:-1]:
        (tmp_path / entry["file_name"]).write_bytes((shapes_dir / entry["file_name"]).read_bytes())
    iio.imwrite(tmp_path / "empty.png", np.full((40, 40, 3), 128, np.uint8))
    status = main(["train", "--gt", str(tmp_path / "gt.json"), "--images", str(tmp_path), "--model", "fast-rcnn",
                   "--steps", str(N_IMAGES + 1), "--out", str(tmp_path / "w.npz"), "--no-progress"])  # every image once
    assert status == 0, capsys.readouterr().err
    assert capsys.readouterr().out.startswith(f"fast-rcnn: {N_IMAGES} images, 3 classes (1 image without boxes left out); ")


def _train(shapes_dir, out, steps, *extra, model="fast-rcnn"):
    """`scratchdet train` on `shapes_dir` writing `out` (weights) and `out`.json (losses); its exit status."""
    return main(["train", "--gt", str(shapes_dir / "annotations.json"), "--images", str(shapes_dir), "--model", model,
                 "--steps", str(steps), "--out", str(out), "--log", f"{out}.json", "--no-progress", *extra])


def test_resume_goes_on_from_the_checkpoint_exactly(shapes_dir, tmp_path, capsys):
    checkpoint = str(tmp_path / "ckpt.npz")
    assert _train(shapes_dir, tmp_path / "straight", 4) == 0
    assert _train(shapes_dir, tmp_path / "half", 2, "--checkpoint", checkpoint) == 0
    capsys.readouterr()
    assert _train(shapes_dir, tmp_path / "resumed", 4, "--checkpoint", checkpoint, "--resume") == 0
    assert "resumed from" in capsys.readouterr().out
    straight, resumed = nn.load(tmp_path / "straight"), nn.load(tmp_path / "resumed")
    for (name, layer, key), (_, other, _) in zip(straight.named_parameters(), resumed.named_parameters()):
        np.testing.assert_array_equal(layer.params[key], other.params[key], err_msg=name)
    assert json.loads((tmp_path / "resumed.json").read_text()) == json.loads((tmp_path / "straight.json").read_text())


def test_resume_keeps_the_steps_the_checkpoint_holds(shapes_dir, tmp_path):
    # the first two steps ran at another learning rate: a run that ignored the checkpoint would differ
    checkpoint = str(tmp_path / "ckpt.npz")
    assert _train(shapes_dir, tmp_path / "half", 2, "--checkpoint", checkpoint, "--lr", "0.05") == 0
    assert _train(shapes_dir, tmp_path / "resumed", 4, "--checkpoint", checkpoint, "--resume") == 0
    assert _train(shapes_dir, tmp_path / "fresh", 4) == 0
    half, resumed, fresh = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("half", "resumed", "fresh"))
    assert resumed["steps"] == [0, 1, 2, 3]
    assert resumed["losses"]["total"][:2] == half["losses"]["total"]
    assert resumed["losses"]["total"][1] != fresh["losses"]["total"][1]


def test_resume_records_the_learning_rate_the_checkpoint_trained_with(shapes_dir, tmp_path):
    checkpoint = str(tmp_path / "ckpt.npz")
    assert _train(shapes_dir, tmp_path / "half", 2, "--checkpoint", checkpoint, "--lr", "0.05") == 0
    assert _train(shapes_dir, tmp_path / "resumed", 3, "--checkpoint", checkpoint, "--resume") == 0  # --lr 0.01 by default
    assert nn.load(tmp_path / "resumed", with_metadata=True)[1]["extra"]["lr"] == 0.05


def _no_proposals(*args, **kwargs):
    raise AssertionError("Selective Search ran")


def test_resume_from_a_checkpoint_of_every_step_writes_its_weights_without_training(shapes_dir, tmp_path, capsys, monkeypatch):
    checkpoint = str(tmp_path / "ckpt.npz")
    assert _train(shapes_dir, tmp_path / "done", 2, "--checkpoint", checkpoint) == 0
    capsys.readouterr()
    monkeypatch.setattr("scratchdet.train.dataset_proposals", _no_proposals)
    assert _train(shapes_dir, tmp_path / "again", 2, "--checkpoint", checkpoint, "--resume") == 0
    assert f"nothing to train: {checkpoint} already holds 2 steps" in capsys.readouterr().out
    done, again = nn.load(tmp_path / "done"), nn.load(tmp_path / "again")
    for (name, layer, key), (_, other, _) in zip(done.named_parameters(), again.named_parameters()):
        np.testing.assert_array_equal(layer.params[key], other.params[key], err_msg=name)
    assert json.loads((tmp_path / "again.json").read_text()) == json.loads((tmp_path / "done.json").read_text())


def test_resume_to_fewer_steps_than_the_checkpoint_holds_exits_2(shapes_dir, tmp_path, capsys, monkeypatch):
    # the weights would be those of 2 steps, said to be of 1
    checkpoint = str(tmp_path / "ckpt.npz")
    assert _train(shapes_dir, tmp_path / "two", 2, "--checkpoint", checkpoint) == 0
    before = files_under(tmp_path)
    capsys.readouterr()
    monkeypatch.setattr("scratchdet.train.dataset_proposals", _no_proposals)
    assert _train(shapes_dir, tmp_path / "one", 1, "--checkpoint", checkpoint, "--resume") == 2
    assert_one_line_error(capsys, "train", f"--steps 1: {checkpoint} already holds 2 steps; give --steps 2 or more")
    assert files_under(tmp_path) == before


def test_train_interrupted_while_writing_leaves_neither_weights_nor_log(shapes_dir, tmp_path, monkeypatch):
    def interrupt(*args, **kwargs):  # Ctrl-C after the weights were written, while the log is
        raise KeyboardInterrupt

    monkeypatch.setattr(json, "dump", interrupt)
    assert _train(shapes_dir, tmp_path / "w.npz", 1) == 130
    assert files_under(tmp_path) == []


@pytest.mark.parametrize("content, message", [(b"PK\x03\x04 cut short", "not a readable .npz checkpoint"), (None, "the checkpoint's run had category_ids=[1, 2], classes=")],
                         ids=["corrupt", "other-classes"])
def test_resume_from_a_bad_checkpoint_exits_2(shapes_dir, tmp_path, capsys, monkeypatch, content, message):
    checkpoint = tmp_path / "ckpt.npz"
    if content is None:  # a checkpoint of a detector of 2 classes, not 3
        gt = json.loads((shapes_dir / "annotations.json").read_text())
        gt["categories"] = gt["categories"][:2]
        gt["annotations"] = [a for a in gt["annotations"] if a["category_id"] <= 2]
        (tmp_path / "two.json").write_text(json.dumps(gt))
        assert main(["train", "--gt", str(tmp_path / "two.json"), "--images", str(shapes_dir), "--model", "fast-rcnn",
                     "--steps", "1", "--out", str(tmp_path / "two.npz"), "--checkpoint", str(checkpoint), "--no-progress"]) == 0
    else:
        checkpoint.write_bytes(content)
    before = files_under(tmp_path)
    capsys.readouterr()
    monkeypatch.setattr("scratchdet.train.dataset_proposals", _no_proposals)  # checked before any work
    assert _train(shapes_dir, tmp_path / "w.npz", 2, "--checkpoint", str(checkpoint), "--resume") == 2
    assert_one_line_error(capsys, "train", message)
    assert files_under(tmp_path) == before


# -- bad input: one line on stderr, exit status 2, nothing written --------------------------------------


def _sequential_weights(path):
    nn.save(path, nn.Sequential([nn.Linear(2, 3, rng=0)]))


# name -> (arguments with {data}, {tmp} and {weights} to fill, command, expected part of the message)
BAD_INPUTS = {
    "train-missing-gt": (["train", "--gt", "{tmp}/none.json", "--images", "{data}", "--model", "rcnn", "--steps", "1",
                          "--out", "{tmp}/w.npz"], "none.json: no such file"),
    "train-malformed-gt": (["train", "--gt", "{tmp}/bad.json", "--images", "{data}", "--model", "rcnn", "--steps", "1",
                            "--out", "{tmp}/w.npz"], "bad.json: malformed JSON"),
    "train-missing-image": (["train", "--gt", "{tmp}/other.json", "--images", "{data}", "--model", "fast-rcnn",
                             "--steps", "1", "--out", "{tmp}/w.npz"], "nowhere.png: no such file"),
    "train-zero-steps": (["train", "--gt", "{data}/annotations.json", "--images", "{data}", "--model", "fast-rcnn",
                          "--steps", "0", "--out", "{tmp}/w.npz"], "--steps must be a positive"),
    "train-negative-steps": (["train", "--gt", "{data}/annotations.json", "--images", "{data}", "--model", "fast-rcnn",
                              "--steps", "-3", "--out", "{tmp}/w.npz"], "--steps must be a positive"),
    "train-resume-without-checkpoint": (["train", "--gt", "{data}/annotations.json", "--images", "{data}", "--model",
                                         "rcnn", "--steps", "1", "--out", "{tmp}/w.npz", "--resume"], "--resume needs --checkpoint"),
    "train-out-is-a-directory": (["train", "--gt", "{data}/annotations.json", "--images", "{data}", "--model", "rcnn",
                                  "--steps", "1", "--out", "{tmp}/dir"], "is a directory"),
    "train-log-overwrites-the-gt": (["train", "--gt", "{tmp}/other.json", "--images", "{data}", "--model", "rcnn",
                                     "--steps", "1", "--out", "{tmp}/w.npz", "--log", "{tmp}/other.json"], "would overwrite the input"),
    "train-images-not-a-directory": (["train", "--gt", "{data}/annotations.json", "--images", "{tmp}/bad.json", "--model",
                                      "rcnn", "--steps", "1", "--out", "{tmp}/w.npz"], "is not a directory"),
    "train-image-of-another-size": (["train", "--gt", "{tmp}/sized.json", "--images", "{data}", "--model", "fast-rcnn",
                                     "--steps", "1", "--out", "{tmp}/w.npz"], "the image is 48x48 pixels, "),
    "train-no-boxes": (["train", "--gt", "{tmp}/no_boxes.json", "--images", "{data}", "--model", "fast-rcnn", "--steps", "1",
                        "--out", "{tmp}/w.npz"], "no_boxes.json: no boxes to train on"),
    "detect-gt-names-other-objects": (["detect", "{weights}", "{data}/shapes_000001.png", "--gt", "{tmp}/renamed.json",
                                       "--out", "{tmp}/d.json"], "category 10 is 'person', "),
    "detect-image-of-another-size": (["detect", "{weights}", "{data}/shapes_000001.png", "--gt", "{tmp}/sized.json",
                                      "--out", "{tmp}/d.json"], "the image is 48x48 pixels, "),
    "detect-not-a-detector": (["detect", "{tmp}/seq.npz", "{data}/shapes_000001.png", "--out", "{tmp}/d.json"],
                              "holds a Sequential, not a detector"),
    "detect-json-as-weights": (["detect", "{tmp}/bad.json", "{data}/shapes_000001.png", "--out", "{tmp}/d.json"],
                               "not a readable .npz weights file"),
    "detect-missing-weights": (["detect", "{tmp}/none.npz", "{data}/shapes_000001.png", "--out", "{tmp}/d.json"],
                               "weights file not found"),
    "detect-missing-image": (["detect", "{weights}", "{data}/shapes_000001.png", "{tmp}/none.png", "--out", "{tmp}/d.json"],
                             "none.png: no such file"),
    "detect-one-pixel-image": (["detect", "{weights}", "{data}/shapes_000001.png", "{tmp}/dot.png", "--out", "{tmp}/d.json"],
                               "dot.png must have at least 2 pixels"),
    "detect-image-not-in-gt": (["detect", "{weights}", "{data}/shapes_000001.png", "--gt", "{tmp}/other.json",
                                "--out", "{tmp}/d.json"], "no image of"),
    "detect-gt-without-the-categories": (["detect", "{weights}", "{data}/shapes_000001.png", "--gt", "{data}/annotations.json",
                                          "--out", "{tmp}/d.json"], "has no categories with the ids [10, 20, 30]"),
    "detect-score-out-of-range": (["detect", "{weights}", "{data}/shapes_000001.png", "--out", "{tmp}/d.json", "--score", "2"],
                                  "--score must be in [0, 1]"),
    "detect-out-overwrites-an-image": (["detect", "{weights}", "{data}/shapes_000001.png", "--out", "{data}/shapes_000001.png"],
                                       "would overwrite the input"),
    "detect-plot-is-a-file": (["detect", "{weights}", "{data}/shapes_000001.png", "--out", "{tmp}/d.json", "--plot",
                               "{tmp}/bad.json"], "is not a directory"),
    "demo-zero-steps": (["demo", "--out", "{tmp}/demo", "--steps", "0"], "--steps must be a positive"),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case, shapes_dir, trained, tmp_path, capsys):
    arguments, message = BAD_INPUTS[case]
    (tmp_path / "dir").mkdir()
    (tmp_path / "bad.json").write_text('{"images": [,]}')
    (tmp_path / "other.json").write_text(json.dumps(
        {"images": [{"id": 1, "file_name": "nowhere.png"}], "categories": [{"id": 10 * k, "name": name} for k, name in SHAPES],
         "annotations": [{"id": 1, "image_id": 1, "category_id": 10, "bbox": [1, 2, 10, 10]}]}
    ))
    (tmp_path / "sized.json").write_text(json.dumps(
        {"images": [{"id": 1, "file_name": "shapes_000001.png", "width": 99, "height": 48}],
         "categories": [{"id": 10 * k, "name": name} for k, name in SHAPES],
         "annotations": [{"id": 1, "image_id": 1, "category_id": 10, "bbox": [1, 2, 10, 10]}]}
    ))
    gt = json.loads((shapes_dir / "gt10.json").read_text())
    (tmp_path / "no_boxes.json").write_text(json.dumps({**gt, "annotations": []}))
    coco_names = {10: "person", 20: "bicycle", 30: "car"}  # the same ids, other objects
    (tmp_path / "renamed.json").write_text(json.dumps(
        {**gt, "categories": [{**c, "name": coco_names[c["id"]]} for c in gt["categories"]]}
    ))
    iio.imwrite(tmp_path / "dot.png", np.zeros((1, 1, 3), np.uint8))
    _sequential_weights(tmp_path / "seq.npz")
    before, data_before = files_under(tmp_path), files_under(shapes_dir)
    filled = [a.format(data=shapes_dir, tmp=tmp_path, weights=trained[0]) for a in arguments]
    assert main([*filled, "--no-progress"]) == 2
    assert_one_line_error(capsys, arguments[0], message)
    assert files_under(tmp_path) == before and files_under(shapes_dir) == data_before


@pytest.mark.parametrize(
    "arguments",
    [["train", "--gt", "gt.json", "--images", ".", "--model", "yolo", "--steps", "1", "--out", "w.npz"],
     ["train", "--gt", "gt.json", "--images", ".", "--model", "rcnn", "--steps", "many", "--out", "w.npz"],
     ["detect", "w.npz"], ["data"], ["data", "shapes", "out"]],
    ids=["unknown-model", "steps-not-a-number", "detect-without-images", "data-without-dataset", "shapes-without-images"],
)
def test_usage_errors_exit_2_with_one_line(capsys, arguments):
    with pytest.raises(SystemExit) as exited:
        main(arguments)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.count("\n") == 1 and "error: " in err and "--help" in err, err


# -- demo ----------------------------------------------------------------------------------------------


def test_demo_writes_every_file_and_prints_the_map(tmp_path, capsys):
    out = tmp_path / "demo"
    (out / "mine").mkdir(parents=True)
    (out / "mine" / "notes.txt").write_text("mine")  # another file in the directory: left alone
    assert main(["demo", "--out", str(out), "--steps", "3", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "VOC mAP @[IoU=0.5, all-point] = " in printed and "COCO AP @[IoU=0.50:0.95] = " in printed
    assert files_under(out) == sorted([*FILES.values(), "mine", "mine/notes.txt"])
    assert (out / "mine" / "notes.txt").read_text() == "mine"
    gt = read_ground_truth(out / FILES["ground_truth"])
    read_detections(out / FILES["detections"], gt)
    assert isinstance(nn.load(out / FILES["weights"]), FastRCNN)
    assert json.loads((out / FILES["losses"]).read_text())["steps"] == [0, 1, 2]
    for picture in (FILES["detections_picture"], FILES["losses_picture"]):
        assert iio.imread(out / picture).ndim == 3


def test_demo_interrupted_while_writing_writes_none_of_its_files(tmp_path, monkeypatch):
    # Ctrl-C at the last file: the five before it must not be left beside an earlier run's weights
    (tmp_path / "notes.txt").write_text("mine")

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("scratchdet.commands.train.save_detector", interrupt)
    assert main(["demo", "--out", str(tmp_path), "--steps", "1", "--no-progress"]) == 130
    assert files_under(tmp_path) == ["notes.txt"]


@pytest.mark.skipif("cuda" in backend.available(), reason="a GPU or the CUDA simulator is present")
@pytest.mark.parametrize("command", ["train", "detect", "demo"])
def test_device_cuda_without_a_gpu_exits_2_before_any_work(command, trained, shapes_dir, tmp_path, capsys):
    arguments = {
        "train": ["--gt", str(shapes_dir / "gt10.json"), "--images", str(shapes_dir), "--model", "fast-rcnn", "--steps", "1",
                  "--out", str(tmp_path / "w.npz")],
        "detect": [str(trained[0]), str(shapes_dir / "shapes_000001.png"), "--out", str(tmp_path / "dets.json")],
        "demo": ["--out", str(tmp_path / "demo"), "--steps", "1"],
    }[command]
    assert main([command, *arguments, "--device", "cuda", "--no-progress"]) == 2
    assert_one_line_error(capsys, command, "the 'cuda' backend is not available here")
    assert files_under(tmp_path) == []


def test_scratchdet_help_lists_the_commands_in_pipeline_order(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    listed = [line.split()[0] for line in capsys.readouterr().out.split("commands:")[1].splitlines()[2:] if line[4:5].isalpha()]
    assert listed == ["demo", "data", "segment", "proposals", "train", "detect", "evaluate"]


def test_detection_labels_at_the_top_of_an_image_stay_inside_it(tmp_path, monkeypatch):
    # a label above a box at the image's top edge would be drawn over the title
    figures = []
    monkeypatch.setattr(viz, "_save", lambda fig, path, fmt=None: figures.append(fig))
    found = Detections(np.array([[2, 0, 30, 20], [10, 30, 40, 50]], np.float32), np.array([0.9, 0.8], np.float32), np.array([1, 2]))
    viz.plot_detections(np.zeros((60, 80, 3), np.uint8), found, tmp_path / "d.png", classes=("a", "b"))
    (fig,) = figures
    fig.canvas.draw()
    (ax,) = fig.axes
    image = ax.images[0].get_window_extent()
    labels = {text.get_text(): text.get_window_extent() for text in ax.texts}
    assert labels["a 0.90"].y1 <= image.y1 + 1  # inside the image (display y grows upwards)
    assert labels["b 0.80"].y0 >= image.y1 - 30 * image.height / 60 - 1  # above its box, which has room


def test_detection_boxes_follow_the_pixel_convention(tmp_path, monkeypatch):
    # pixel (i, j) covers [j, j+1) x [i, i+1): a box (0, 0, W, H) is the image's outline, not half a pixel off
    figures = []
    monkeypatch.setattr(viz, "_save", lambda fig, path, fmt=None: figures.append(fig))
    found = Detections(np.array([[0, 0, 8, 6]], np.float32), np.array([0.9], np.float32), np.array([1]))
    viz.plot_detections(np.zeros((6, 8, 3), np.uint8), found, tmp_path / "d.png", ground_truth=np.array([[0, 0, 8, 6]]))
    (fig,) = figures
    fig.canvas.draw()
    (ax,) = fig.axes
    image = ax.images[0].get_window_extent()
    for patch in ax.patches:  # the ground truth's box and the detection's
        np.testing.assert_allclose(patch.get_window_extent().get_points(), image.get_points(), atol=1.5)  # the line's width


def test_detection_pictures_refuse_mismatched_input_and_write_nothing(tmp_path):
    image = np.zeros((20, 30, 3), np.uint8)
    found = Detections(np.array([[1, 2, 10, 12]], np.float32), np.array([0.9], np.float32), np.array([2]))
    with pytest.raises(InvalidArgumentError, match="one detections per image"):
        viz.plot_detections([image, image], [found], tmp_path / "d.png")
    with pytest.raises(InvalidArgumentError, match="one value per step"):
        viz.plot_training_curves({"steps": [0, 1], "losses": {"total": [1.0]}}, tmp_path / "l.png")
    assert files_under(tmp_path) == []
    viz.plot_detections(image, found, tmp_path / "d.png", classes=("a", "b"), ground_truth=np.array([[0, 0, 5, 5]]))
    assert iio.imread(tmp_path / "d.png").ndim == 3


def test_subprocess_bad_weights_prints_no_traceback(tmp_path):
    (tmp_path / "w.npz").write_text("not weights")
    proc = subprocess.run(
        [sys.executable, "-m", "scratchdet", "detect", str(tmp_path / "w.npz"), str(tmp_path / "x.png"), "--out", str(tmp_path / "d.json")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("scratchdet detect: error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert files_under(tmp_path) == ["w.npz"]


@pytest.mark.parametrize("change", ["renamed", "renumbered"])
def test_resume_on_other_classes_exits_2_before_any_work(shapes_dir, tmp_path, capsys, monkeypatch, change):
    # a model of as many classes fits the checkpoint's parameters: its outputs would go on learning other
    # classes (or the same under other category ids) from where the checkpoint's left off
    checkpoint = str(tmp_path / "ckpt.npz")
    assert _train(shapes_dir, tmp_path / "half", 1, "--checkpoint", checkpoint) == 0
    gt = json.loads((shapes_dir / ("annotations.json" if change == "renamed" else "gt10.json")).read_text())
    if change == "renamed":
        for category in gt["categories"]:
            category["name"] += "_x"
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    before = files_under(tmp_path)
    capsys.readouterr()
    monkeypatch.setattr("scratchdet.train.dataset_proposals", _no_proposals)
    status = main(["train", "--gt", str(tmp_path / "gt.json"), "--images", str(shapes_dir), "--model", "fast-rcnn", "--steps", "2",
                   "--out", str(tmp_path / "resumed.npz"), "--checkpoint", checkpoint, "--resume", "--no-progress"])
    assert status == 2
    assert_one_line_error(capsys, "train", f"{checkpoint}: the checkpoint's run had " + ("classes=" if change == "renamed" else "category_ids=[1, 2, 3]"))
    assert files_under(tmp_path) == before


def test_resume_with_another_seed_exits_2_before_any_work(shapes_dir, tmp_path, capsys, monkeypatch):
    # another --seed draws other batches: the resumed run would not be the one the checkpoint began
    checkpoint = str(tmp_path / "ckpt.npz")
    assert _train(shapes_dir, tmp_path / "half", 1, "--checkpoint", checkpoint, "--seed", "1") == 0
    before = files_under(tmp_path)
    capsys.readouterr()
    monkeypatch.setattr("scratchdet.train.dataset_proposals", _no_proposals)
    assert _train(shapes_dir, tmp_path / "resumed", 2, "--checkpoint", checkpoint, "--resume", "--seed", "2") == 2
    assert_one_line_error(capsys, "train", f"{checkpoint}: the checkpoint's run had seed=1; resume it with the same settings")
    assert files_under(tmp_path) == before
