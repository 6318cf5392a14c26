"""`scratchdet segment` and `scratchdet proposals`: outputs, and one-line errors with exit status 2."""

import json

import imageio.v3 as iio
import numpy as np
import pytest

from scratchdet.cli import main


@pytest.fixture
def picture(tmp_path, photos):
    path = tmp_path / "chelsea.png"
    iio.imwrite(path, photos["chelsea"])
    return path


def test_segment_prints_the_count_and_writes_plot_and_labels(tmp_path, picture, capsys):
    status = main(["segment", str(picture), "--scale", "100", "--plot", str(tmp_path / "seg.png"),
                   "--out", str(tmp_path / "labels.npy")])
    assert status == 0
    labels = np.load(tmp_path / "labels.npy")
    assert labels.shape == (64, 96) and f"{labels.max() + 1} segments" in capsys.readouterr().out
    assert (tmp_path / "seg.png").stat().st_size > 0


def test_segment_takes_an_upper_case_npy_name_as_plot_takes_upper_case_extensions(tmp_path, picture):
    assert main(["segment", str(picture), "--out", str(tmp_path / "LABELS.NPY")]) == 0
    assert np.load(tmp_path / "LABELS.NPY").shape == (64, 96) and not (tmp_path / "LABELS.NPY.npy").exists()


def test_proposals_writes_json_and_one_plot_per_image(tmp_path, picture, photos, capsys):
    second = tmp_path / "coffee.png"
    iio.imwrite(second, photos["coffee"])
    out = tmp_path / "boxes.json"
    status = main(["proposals", str(picture), str(second), "--mode", "single", "--max", "15",
                   "--out", str(out), "--plot", str(tmp_path / "top.png")])
    assert status == 0
    result = json.loads(out.read_text())
    assert [entry["file"] for entry in result["images"]] == [str(picture), str(second)]
    boxes = np.array(result["images"][0]["boxes"])
    assert boxes.shape[1] == 4 and 1 <= len(boxes) <= 15
    assert (tmp_path / "top_chelsea.png").exists() and (tmp_path / "top_coffee.png").exists()


@pytest.mark.parametrize("command", ["segment", "proposals"])
def test_an_image_named_with_dollar_signs_is_drawn_and_written(tmp_path, photos, command):
    # the picture's title is the file name: matplotlib would read "$1_and_$" as mathematics
    path = tmp_path / "cost_$1_and_$2.png"
    iio.imwrite(path, photos["coffee"])
    out = tmp_path / ("labels.npy" if command == "segment" else "boxes.json")
    extra = ["--mode", "single"] if command == "proposals" else []
    assert main([command, str(path), "--plot", str(tmp_path / "p.png"), "--out", str(out), *extra]) == 0
    assert (tmp_path / "p.png").stat().st_size > 0 and out.stat().st_size > 0


def test_segment_of_a_greyscale_file_segments_its_one_channel(tmp_path, photos):
    # three copies of the channel would make every edge sqrt(3) heavier: more, smaller segments
    from scratchdet.proposals import felzenszwalb

    grey = photos["rocket"][:, :, 1]
    iio.imwrite(tmp_path / "grey.png", grey)
    assert main(["segment", str(tmp_path / "grey.png"), "--scale", "300", "--out", str(tmp_path / "labels.npy"),
                 "--plot", str(tmp_path / "seg.png")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "labels.npy"), felzenszwalb(grey, scale=300, sigma=0.8, min_size=50))
    assert (tmp_path / "seg.png").stat().st_size > 0


def test_proposals_accepts_greyscale_and_rgba(tmp_path, photos):
    iio.imwrite(tmp_path / "grey.png", photos["rocket"][:, :, 0])
    iio.imwrite(tmp_path / "rgba.png", np.concatenate([photos["rocket"], np.full((64, 96, 1), 9, np.uint8)], axis=2))
    assert main(["proposals", str(tmp_path / "grey.png"), str(tmp_path / "rgba.png"), "--mode", "single"]) == 0


@pytest.mark.parametrize("command", ["segment", "proposals"])
@pytest.mark.parametrize(
    "content, message",
    [(None, "no such file"), (b"", "empty"), (b"not an image at all", "not a readable image"), ("1x1", "at least 2 pixels")],
)
def test_bad_images_exit_2_with_one_line(tmp_path, capsys, command, content, message):
    path = tmp_path / "bad.png"
    if content == "1x1":
        iio.imwrite(path, np.zeros((1, 1, 3), np.uint8))
    elif content is not None:
        path.write_bytes(content)
    assert main([command, str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_bad_option_values_exit_2(picture, capsys):
    assert main(["proposals", str(picture), "--max", "0"]) == 2
    assert main(["segment", str(picture), "--out", "labels.txt"]) == 2
    assert main(["segment", str(picture), "--scale", "-5"]) == 2


def test_proposals_with_the_second_of_three_images_corrupt_writes_nothing(tmp_path, picture, photos, capsys):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    iio.imwrite(tmp_path / "coffee.png", photos["coffee"])
    out, plot = tmp_path / "boxes.json", tmp_path / "top.png"
    status = main(["proposals", str(picture), str(tmp_path / "broken.jpg"), str(tmp_path / "coffee.png"),
                   "--mode", "single", "--out", str(out), "--plot", str(plot)])
    assert status == 2 and "broken.jpg" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.jpg", "chelsea.png", "coffee.png"]


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["proposals", "--seed", "-1"], "--seed"),
        (["proposals", "--out", "{dir}"], "is a directory"),
        (["proposals", "--plot", "{tmp}/top.xyz"], "format 'xyz'"),
        (["segment", "--out", "{tmp}/labels.npy", "--plot", "{tmp}/seg.xyz"], "format 'xyz'"),
        (["segment", "--out", "{dir}/labels.npy"], "is a directory"),
        (["segment", "--sigma", "inf"], "sigma"),
        (["proposals", "--out", "{tmp}/new/"], "is a directory"),
        (["proposals", "--plot", "{tmp}/new/"], "is a directory"),
        # a later output that cannot be written stops the run before the first is written
        (["segment", "--out", "{tmp}/labels.npy", "--plot", "{dir}/a_file/seg.png"], "a_file is not a directory"),
        (["proposals", "--out", "{tmp}/boxes.json", "--plot", "{dir}/a_file/new/top.png"], "a_file is not a directory"),
        (["segment", "--plot", "{image}"], "would overwrite the input"),
        (["proposals", "--out", "{image}"], "would overwrite the input"),
        (["proposals", "--out", "{tmp}/top.png", "--plot", "{tmp}/./top.png"], "is the file --out already writes"),
    ],
    ids=["negative-seed", "out-is-a-directory", "unknown-plot-format", "segment-unknown-plot-format",
         "segment-out-is-a-directory", "segment-infinite-sigma", "out-names-a-new-directory",
         "plot-names-a-new-directory", "segment-plot-under-a-file", "proposals-plot-under-a-file",
         "segment-plot-is-the-image", "proposals-out-is-the-image", "out-and-plot-are-one-file"],
)
def test_bad_outputs_and_options_exit_2_before_writing_anything(tmp_path, picture, capsys, arguments, message):
    (tmp_path / "outdir").mkdir()
    (tmp_path / "outdir" / "labels.npy").mkdir()
    (tmp_path / "outdir" / "a_file").write_text("")
    filled = [a.format(tmp=tmp_path, dir=tmp_path / "outdir", image=picture) for a in arguments]
    before = picture.read_bytes()
    assert main([filled[0], str(picture)] + filled[1:]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chelsea.png", "outdir"]
    assert sorted(p.name for p in (tmp_path / "outdir").iterdir()) == ["a_file", "labels.npy"]
    assert picture.read_bytes() == before


def test_proposals_plots_of_images_with_the_same_name_would_collide_exit_2(tmp_path, picture, capsys):
    (tmp_path / "other").mkdir()
    iio.imwrite(tmp_path / "other" / "chelsea.png", np.zeros((8, 8, 3), np.uint8))
    status = main(["proposals", str(picture), str(tmp_path / "other" / "chelsea.png"), "--mode", "single",
                   "--plot", str(tmp_path / "top.png")])
    assert status == 2 and "top_chelsea.png" in capsys.readouterr().err
    assert not (tmp_path / "top_chelsea.png").exists()


def test_segment_that_cannot_write_its_labels_leaves_no_picture_either(tmp_path, picture, capsys, monkeypatch):
    # the picture is drawn first; a full disk when the labels are saved must not leave it behind alone
    def full_disk(file, array):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", full_disk)
    status = main(["segment", str(picture), "--plot", str(tmp_path / "seg.png"), "--out", str(tmp_path / "labels.npy")])
    err = capsys.readouterr().err
    assert status == 2 and "No space left on device" in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chelsea.png"]


def test_proposals_interrupted_while_drawing_writes_no_picture_and_no_json(tmp_path, picture, photos, monkeypatch):
    # Ctrl-C while the pictures of many images are drawn: none of the files of the run is written
    import scratchdet.viz

    second = tmp_path / "coffee.png"
    iio.imwrite(second, photos["coffee"])
    real = scratchdet.viz.plot_proposals
    drawn = []

    def interrupted_at_the_second(*args, **kwargs):
        if drawn:
            raise KeyboardInterrupt
        drawn.append(real(*args, **kwargs))

    monkeypatch.setattr(scratchdet.viz, "plot_proposals", interrupted_at_the_second)
    status = main(["proposals", str(picture), str(second), "--mode", "single", "--out", str(tmp_path / "boxes.json"),
                   "--plot", str(tmp_path / "top")])
    assert status == 130 and len(drawn) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chelsea.png", "coffee.png"]


def test_a_plot_without_extension_is_written_as_png(tmp_path, picture):
    assert main(["segment", str(picture), "--plot", str(tmp_path / "seg")]) == 0
    assert main(["proposals", str(picture), "--mode", "single", "--plot", str(tmp_path / "top")]) == 0
    for name in ("seg", "top"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
