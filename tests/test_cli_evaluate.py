"""`scratchdet evaluate`: results as a table or JSON, and exit status 2 with one line on bad input."""

import json
import math
import os
import subprocess
import sys

import pytest

from scratchdet.cli import main
from scratchdet.eval import evaluate_coco, evaluate_voc
from scratchdet.eval.coco import STAT_NAMES
from scratchdet.eval.synthetic import random_coco_problem


@pytest.fixture
def files(tmp_path):
    """A random problem written as gt.json and dets.json; returns (gt path, dets path, gt, dets)."""
    gt, dets = random_coco_problem(3, n_images=8, n_categories=3)
    gt_path, dets_path = tmp_path / "gt.json", tmp_path / "dets.json"
    gt_path.write_text(json.dumps(gt))
    dets_path.write_text(json.dumps(dets))
    return gt_path, dets_path, gt, dets


def run_json(capsys, *argv):
    assert main(["evaluate", *map(str, argv), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_coco_json_has_the_12_numbers_and_per_class(files, capsys):
    gt_path, dets_path, gt, dets = files
    out = run_json(capsys, "--gt", gt_path, "--dets", dets_path)
    assert set(out) == {*STAT_NAMES, "per_class"}
    assert out == evaluate_coco(gt, dets)  # JSON keeps floats exactly


@pytest.mark.parametrize("metric, method", [("voc", "all"), ("voc07", "11point")])
def test_voc_json_has_map_and_per_class(files, capsys, metric, method):
    gt_path, dets_path, gt, dets = files
    out = run_json(capsys, "--gt", gt_path, "--dets", dets_path, "--metric", metric, "--iou", 0.6, "--legacy-voc-pixels")
    assert set(out) == {"mAP", "per_class"}
    assert out == evaluate_voc(gt, dets, iou_threshold=0.6, method=method, legacy_voc_pixels=True)


@pytest.mark.parametrize("metric, first_word", [("coco", "AP"), ("voc", "mAP"), ("voc07", "mAP")])
def test_table_lists_every_class(files, capsys, metric, first_word):
    gt_path, dets_path, gt, _ = files
    assert main(["evaluate", "--gt", str(gt_path), "--dets", str(dets_path), "--metric", metric]) == 0
    out = capsys.readouterr().out
    assert out.split()[0] == first_word
    for category in gt["categories"]:
        assert category["name"] in out


def _write(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def _good_gt():
    return {
        "images": [{"id": 1}],
        "categories": [{"id": 1, "name": "cat"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0}],
    }


def _good_dets():
    return [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.5}]


def _det(**change):
    return [{**_good_dets()[0], **change}]


# name -> (gt content or None for a missing file, dets content, extra arguments, expected message part)
BAD_INPUTS = {
    "missing_gt_file": (None, _good_dets(), [], "gt.json: no such file"),
    "missing_dets_file": (_good_gt(), None, [], "dets.json: no such file"),
    "malformed_json": (_good_gt(), '[{"image_id": 1,,}]', [], "dets.json: malformed JSON at line 1 column 17"),
    "gt_missing_annotations": ({"images": [], "categories": []}, [], [], 'gt.json: missing field "annotations"'),
    "gt_is_a_list": ([], [], [], "gt.json: expected a JSON object"),
    "dets_is_an_object": (_good_gt(), {"image_id": 1}, [], "dets.json: expected a JSON list of detections"),
    "det_missing_score": (_good_gt(), [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}], [], 'dets.json: detections[0]: missing field "score"'),
    "unknown_image_id": (_good_gt(), _det(image_id=5), [], 'dets.json: detections[0]: field "image_id" is 5, which is not among'),
    "unknown_category_id": (_good_gt(), _det(category_id=2), [], 'dets.json: detections[0]: field "category_id" is 2'),
    "negative_width": (_good_gt(), _det(bbox=[0, 0, -1, 1]), [], "negative width or height"),
    "infinite_box": (_good_gt(), _det(bbox=[0, 0, math.inf, 1]), [], 'field "bbox" must hold finite numbers'),
    "nan_score": (_good_gt(), _det(score=math.nan), [], 'field "score" must be a finite number, got NaN'),
    "string_bbox": (_good_gt(), _det(bbox="0 0 1 1"), [], 'field "bbox" must be a list of 4 numbers'),
    "string_image_id": (_good_gt(), _det(image_id="1"), [], 'field "image_id" must be an integer, got "1"'),
    "deeply_nested_json": (_good_gt(), "[" * 100_000 + "]" * 100_000, [], "dets.json: JSON nested too deeply to read"),
    "integer_too_large_for_a_float": (_good_gt(), '[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1' + "0" * 400 + "}]", [], 'field "score" must be a finite number'),
    "boolean_score_after_a_number": (_good_gt(), _good_dets() + _det(score=True), [], 'dets.json: detections[1]: field "score" must be a finite number, got true'),
    "iou_with_coco": (_good_gt(), _good_dets(), ["--iou", "0.7"], "--iou applies to --metric voc / voc07 only"),
    "legacy_pixels_with_coco": (_good_gt(), _good_dets(), ["--legacy-voc-pixels"], "--legacy-voc-pixels applies to --metric voc"),
    "iou_out_of_range": (_good_gt(), _good_dets(), ["--metric", "voc", "--iou", "1.5"], "--iou must be in (0, 1], got 1.5"),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line(case, tmp_path, capsys):
    gt, dets, extra, message = BAD_INPUTS[case]
    gt_path = tmp_path / "gt.json" if gt is None else _write(tmp_path, "gt.json", gt)
    dets_path = tmp_path / "dets.json" if dets is None else _write(tmp_path, "dets.json", dets)
    assert main(["evaluate", "--gt", str(gt_path), "--dets", str(dets_path), *extra]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("scratchdet evaluate: error: ")
    assert message in captured.err


@pytest.mark.parametrize(
    "arguments", [["evaluate", "--no-such-option"], ["segment"], ["no-such-command"], ["proposals", "x.png", "--max", "many"]]
)
def test_usage_errors_exit_2_with_one_line(capsys, arguments):
    with pytest.raises(SystemExit) as exited:
        main(arguments)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.count("\n") == 1 and "error: " in err and "--help" in err, err


def test_directory_instead_of_file_exits_2_with_one_line(tmp_path, capsys):
    gt_path = _write(tmp_path, "gt.json", _good_gt())
    assert main(["evaluate", "--gt", str(gt_path), "--dets", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"scratchdet evaluate: error: {tmp_path}: is a directory, expected a JSON file\n"


def test_empty_detection_list_is_valid(tmp_path, capsys):
    out = run_json(capsys, "--gt", _write(tmp_path, "gt.json", _good_gt()), "--dets", _write(tmp_path, "dets.json", []))
    assert out["AP"] == 0.0


def test_subprocess_bad_input_prints_no_traceback(tmp_path):
    gt_path = _write(tmp_path, "gt.json", _good_gt())
    dets_path = _write(tmp_path, "dets.json", _det(score="high"))
    proc = subprocess.run(
        [sys.executable, "-m", "scratchdet", "evaluate", "--gt", str(gt_path), "--dets", str(dets_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        f'scratchdet evaluate: error: {dets_path}: detections[0]: field "score" must be a finite number, got "high"'
    )


def _run_writing_to(stdout, *argv):
    return subprocess.run([sys.executable, "-m", "scratchdet", *map(str, argv)], stdout=stdout, stderr=subprocess.PIPE,
                          text=True, timeout=120)  # fmt: skip


@pytest.mark.parametrize("argv, status", [(("evaluate", "--json"), 141), (("--help",), 0)], ids=["evaluate", "help"])
def test_output_to_a_closed_pipe_ends_quietly(files, argv, status):
    # `scratchdet evaluate ... | head -1`: the reader went away; no traceback, no message (as `cat`), and
    # 141 as a shell reports a writer stopped by SIGPIPE (argparse's --help drops the failed write itself)
    gt_path, dets_path, _, _ = files
    read, write = os.pipe()
    os.close(read)
    try:
        arguments = argv if argv[0] == "--help" else (*argv, "--gt", gt_path, "--dets", dets_path)
        proc = _run_writing_to(write, *arguments)
    finally:
        os.close(write)
    assert (proc.returncode, proc.stderr) == (status, "")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full")
def test_output_to_a_full_disk_exits_2_with_one_line(files):
    gt_path, dets_path, _, _ = files
    with open("/dev/full", "w") as full:
        proc = _run_writing_to(full, "evaluate", "--gt", gt_path, "--dets", dets_path)
    assert proc.returncode == 2
    assert proc.stderr == "scratchdet evaluate: error: cannot write the output: No space left on device\n"
