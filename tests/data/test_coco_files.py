"""COCO JSON files: reading, writing atomically, and a clear error for every kind of bad content."""

import json
import math

import numpy as np
import pytest

from scratchdet.data.coco import (
    load_json,
    parse_detections,
    parse_ground_truth,
    read_detections,
    read_ground_truth,
    write_detections,
    write_ground_truth,
)
from scratchdet.errors import DataFormatError, FileMissingError


def small_gt():
    return {
        "images": [{"id": 7, "file_name": "b.jpg"}, {"id": 3, "file_name": "a.jpg"}],
        "categories": [{"id": 2, "name": "dog"}, {"id": 1, "name": "cat"}],
        "annotations": [
            {"id": 1, "image_id": 3, "category_id": 2, "bbox": [1, 2, 3, 4], "area": 10.5, "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 1, "bbox": [0.5, 0, 10, 0], "iscrowd": 1, "difficult": 1},
        ],
    }


def small_dets():
    return [
        {"image_id": 3, "category_id": 2, "bbox": [1, 2, 3, 4], "score": 0.9},
        {"image_id": 7, "category_id": 1, "bbox": [0, 0, 1.5, 2], "score": 1},
    ]


def test_parse_ground_truth_sorts_ids_and_keeps_annotation_order():
    gt = parse_ground_truth(small_gt())
    np.testing.assert_array_equal(gt.image_ids, [3, 7])
    assert gt.image_names == ("a.jpg", "b.jpg")
    np.testing.assert_array_equal(gt.category_ids, [1, 2])
    assert gt.category_names == ("cat", "dog")
    np.testing.assert_array_equal(gt.image, [0, 1])
    np.testing.assert_array_equal(gt.category, [1, 0])
    np.testing.assert_array_equal(gt.boxes, [[1, 2, 3, 4], [0.5, 0, 10, 0]])
    np.testing.assert_array_equal(gt.area, [10.5, 0.0])  # missing area: w * h
    np.testing.assert_array_equal(gt.iscrowd, [False, True])
    np.testing.assert_array_equal(gt.difficult, [False, True])
    assert gt.boxes.dtype == np.float64 and gt.image.dtype == np.int64


def test_crowd_and_difficult_flags_may_be_booleans():
    gt = small_gt()
    gt["annotations"][0].update(iscrowd=True, difficult=False)
    parsed = parse_ground_truth(gt)
    np.testing.assert_array_equal(parsed.iscrowd, [True, True])
    np.testing.assert_array_equal(parsed.difficult, [False, True])


def test_parse_detections_maps_ids_to_ranks():
    dt = parse_detections(small_dets(), small_gt())
    np.testing.assert_array_equal(dt.image, [0, 1])
    np.testing.assert_array_equal(dt.category, [1, 0])
    np.testing.assert_array_equal(dt.scores, [0.9, 1.0])


def test_empty_lists_are_valid():
    gt = parse_ground_truth({"images": [], "annotations": [], "categories": []})
    assert gt.boxes.shape == (0, 4)
    assert parse_detections([], gt).boxes.shape == (0, 4)


def test_write_then_read_round_trips(tmp_path):
    write_ground_truth(tmp_path / "gt.json", small_gt())
    write_detections(tmp_path / "dets.json", small_dets())
    assert read_ground_truth(tmp_path / "gt.json") == small_gt()
    assert read_detections(tmp_path / "dets.json", small_gt()) == small_dets()


def test_numpy_values_are_written_as_json_numbers(tmp_path):
    gt = small_gt()
    gt["images"][0]["id"] = np.int64(7)
    gt["annotations"][0]["bbox"] = np.array([1.0, 2.0, 3.0, 4.0])
    gt["annotations"][0]["iscrowd"] = np.bool_(False)
    dets = [{**d, "score": np.float32(0.5), "image_id": np.int32(d["image_id"])} for d in small_dets()]
    write_ground_truth(tmp_path / "gt.json", gt)
    write_detections(tmp_path / "dets.json", dets)
    assert read_ground_truth(tmp_path / "gt.json") == json.loads(json.dumps(small_gt()))
    assert [d["score"] for d in read_detections(tmp_path / "dets.json")] == [0.5, 0.5]


def test_failed_write_leaves_no_file(tmp_path):
    bad = small_dets()
    bad[1]["score"] = math.nan
    with pytest.raises(DataFormatError):
        write_detections(tmp_path / "dets.json", bad)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["ground_truth", "detections"])
def test_a_nan_or_infinity_in_an_unchecked_field_is_not_written_as_json(tmp_path, where):
    # Python's json writes the non-standard tokens NaN and Infinity, which strict parsers refuse
    if where == "ground_truth":
        gt = small_gt()
        gt["images"][0]["license"] = math.nan
        with pytest.raises(DataFormatError, match="gt.json: cannot write it as JSON"):
            write_ground_truth(tmp_path / "gt.json", gt)
    else:
        dets = small_dets()
        dets[0]["extra"] = -math.inf
        with pytest.raises(DataFormatError, match="dets.json: cannot write it as JSON"):
            write_detections(tmp_path / "dets.json", dets)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "where, value",
    [("ground_truth", {"a", "set"}), ("ground_truth", object()), ("detections", {(1, 2): "tuple key"})],
)
def test_a_value_json_cannot_hold_in_an_unchecked_field_raises_data_format_error(tmp_path, where, value):
    # a set, a date, any object (or a non-string key) in "info" or an extra field: json raises TypeError
    if where == "ground_truth":
        gt = small_gt()
        gt["info"] = {"made": value}
        with pytest.raises(DataFormatError, match="gt.json: cannot write it as JSON"):
            write_ground_truth(tmp_path / "gt.json", gt)
    else:
        dets = small_dets()
        dets[1]["extra"] = value
        with pytest.raises(DataFormatError, match="dets.json: cannot write it as JSON"):
            write_detections(tmp_path / "dets.json", dets)
    assert list(tmp_path.iterdir()) == []


def test_missing_file_raises_file_missing_error(tmp_path):
    with pytest.raises(FileMissingError, match="nope.json: no such file"):
        load_json(tmp_path / "nope.json")


def test_malformed_json_names_line_and_column(tmp_path):
    path = tmp_path / "gt.json"
    path.write_text('{"images": [\n  {"id": 1},\n  oops\n]}')
    with pytest.raises(DataFormatError, match=r"gt.json: malformed JSON at line 3 column 3"):
        read_ground_truth(path)


def test_directory_instead_of_file_says_so(tmp_path):
    with pytest.raises(FileMissingError, match="is a directory, expected a JSON file"):
        load_json(tmp_path)


def test_json_nested_too_deeply_raises_data_format_error(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DataFormatError, match="deep.json: JSON nested too deeply"):
        load_json(path)


def test_unreadable_file_raises_a_scratchdet_error(tmp_path, monkeypatch):
    import scratchdet.data.coco as coco_module

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    path = tmp_path / "gt.json"
    path.write_text("{}")
    monkeypatch.setattr(coco_module, "open", refuse, raising=False)  # as root, chmod 000 would still read
    with pytest.raises(FileMissingError, match="gt.json: cannot read the file \\(Permission denied\\)"):
        load_json(path)


def test_integer_with_too_many_digits_raises_data_format_error(tmp_path):
    # Python refuses to parse integers of more than 4300 digits (a ValueError, not a JSONDecodeError)
    path = tmp_path / "dets.json"
    path.write_text('[{"score": 1' + "0" * 5000 + "}]")
    with pytest.raises(DataFormatError, match="dets.json: malformed JSON: .*4300 digits"):
        load_json(path)


def test_utf8_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "dets.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(small_dets()).encode())
    assert load_json(path) == small_dets()


def test_non_object_entry_is_described_in_words():
    with pytest.raises(DataFormatError, match=r"detections\[0\] must be an object, got a number$"):
        parse_detections([5], small_gt())


def _mutated(change):
    gt = small_gt()
    change(gt)
    return gt


GT_CASES = {
    "not_an_object": (lambda gt: None, "expected a JSON object"),
    "missing_images": (lambda gt: gt.pop("images"), 'missing field "images"'),
    "annotations_not_a_list": (lambda gt: gt.update(annotations={}), 'field "annotations" must be a list'),
    "image_without_id": (lambda gt: gt["images"][1].pop("id"), r'images\[1\]: missing field "id"'),
    "image_id_is_string": (lambda gt: gt["images"][0].update(id="7"), r'images\[0\]: field "id" must be an integer, got "7"'),
    "duplicate_image_id": (lambda gt: gt["images"][0].update(id=3), 'images: field "id" repeats the value 3'),
    "null_file_name": (lambda gt: gt["images"][0].update(file_name=None), r'images\[0\]: field "file_name" must be a non-empty string, got null'),
    "empty_file_name": (lambda gt: gt["images"][1].update(file_name=""), r'images\[1\]: field "file_name" must be a non-empty string, got ""'),
    "width_is_string": (lambda gt: gt["images"][0].update(width="96"), r'images\[0\]: field "width" must be a positive integer, got "96"'),
    "null_height": (lambda gt: gt["images"][1].update(height=None), r'images\[1\]: field "height" must be a positive integer, got null'),
    "fractional_width": (lambda gt: gt["images"][1].update(width=95.5), r'images\[1\]: field "width" must be a positive integer, got 95.5'),
    "zero_height": (lambda gt: gt["images"][0].update(height=0), r'images\[0\]: field "height" must be a positive integer, got 0'),
    "category_without_name": (lambda gt: gt["categories"][0].pop("name"), r'categories\[0\]: missing field "name"'),
    "duplicate_category_name": (lambda gt: gt["categories"][1].update(name="dog"), 'categories: field "name" repeats the value "dog"'),
    "duplicate_annotation_id": (lambda gt: gt["annotations"][1].update(id=1), 'annotations: field "id" repeats the value 1'),
    "unknown_image": (lambda gt: gt["annotations"][1].update(image_id=99), r'annotations\[1\]: field "image_id" is 99, which is not among the images'),
    "unknown_category": (lambda gt: gt["annotations"][0].update(category_id=5), r'annotations\[0\]: field "category_id" is 5'),
    "missing_bbox": (lambda gt: gt["annotations"][1].pop("bbox"), r'annotations\[1\]: missing field "bbox"'),
    "bbox_three_numbers": (lambda gt: gt["annotations"][1].update(bbox=[1, 2, 3]), r'annotations\[1\]: field "bbox" must be a list of 4 numbers \[x, y, w, h\], got \[1, 2, 3\]'),
    "bbox_with_string": (lambda gt: gt["annotations"][0].update(bbox=[1, "2", 3, 4]), r'annotations\[0\]: field "bbox" must be a list of 4 numbers'),
    "negative_width": (lambda gt: gt["annotations"][1].update(bbox=[1, 2, -3, 4]), r'annotations\[1\]: field "bbox" has a negative width or height'),
    "infinite_box": (lambda gt: gt["annotations"][0].update(bbox=[1, 2, math.inf, 4]), r'annotations\[0\]: field "bbox" must hold finite numbers'),
    # with no "area" field the area is w * h, which must not overflow (the error names the bbox, not a missing area)
    "bbox_area_overflows": (lambda gt: (gt["annotations"][0].update(bbox=[0, 0, 1e200, 1e200]), gt["annotations"][0].pop("area", None)), r'annotations\[0\]: field "bbox" is too large'),
    "nan_area": (lambda gt: gt["annotations"][0].update(area=math.nan), r'annotations\[0\]: field "area" must be a finite number'),
    "annotation_not_an_object": (lambda gt: gt["annotations"].append([1, 2]), r"annotations\[2\] must be an object"),
    "fractional_iscrowd": (lambda gt: gt["annotations"][0].update(iscrowd=0.5), r'annotations\[0\]: field "iscrowd" must be 0 or 1, got 0.5'),
    "difficult_two": (lambda gt: gt["annotations"][1].update(difficult=2), r'annotations\[1\]: field "difficult" must be 0 or 1, got 2'),
    "boolean_area_among_numbers": (lambda gt: gt["annotations"][1].update(area=True), r'annotations\[1\]: field "area" must be a finite number, got true'),
}


@pytest.mark.parametrize("case", GT_CASES, ids=list(GT_CASES))
def test_bad_ground_truth_names_the_field(case):
    change, message = GT_CASES[case]
    gt = None if case == "not_an_object" else _mutated(change)
    with pytest.raises(DataFormatError, match="^gt.json: " + message if case != "not_an_object" else message) as info:
        parse_ground_truth(gt, source="gt.json")
    assert "gt.json" in str(info.value)


DET_CASES = {
    "missing_score": (lambda d: d[1].pop("score"), r'detections\[1\]: missing field "score"'),
    "nan_score": (lambda d: d[0].update(score=math.nan), r'detections\[0\]: field "score" must be a finite number, got NaN'),
    "string_score": (lambda d: d[0].update(score="high"), r'detections\[0\]: field "score" must be a finite number, got "high"'),
    "unknown_image": (lambda d: d[1].update(image_id=4), r'detections\[1\]: field "image_id" is 4, which is not among'),
    "unknown_category": (lambda d: d[0].update(category_id=9), r'detections\[0\]: field "category_id" is 9'),
    "float_image_id": (lambda d: d[0].update(image_id=3.0), r'detections\[0\]: field "image_id" must be an integer, got 3.0'),
    "negative_height": (lambda d: d[1].update(bbox=[0, 0, 1, -1]), r'detections\[1\]: field "bbox" has a negative width or height'),
    "nan_box": (lambda d: d[1].update(bbox=[0, math.nan, 1, 1]), r'detections\[1\]: field "bbox" must hold finite numbers'),
    "detection_not_an_object": (lambda d: d.append("x"), r"detections\[2\] must be an object, got a string"),
    # a boolean among numbers: np.asarray([0.9, True]) is a float array, so the check must not rely on the dtype
    # 2**64 - 1 is read by NumPy as uint64; it must not wrap around to -1
    "image_id_beyond_int64": (lambda d: d[1].update(image_id=2**64 - 1), r'detections\[1\]: field "image_id" must be an integer, got 18446744073709551615'),
    # JSON integers too large for a float: math.isfinite raises OverflowError on them
    "integer_score_too_large_for_a_float": (lambda d: d[1].update(score=10**400), r'detections\[1\]: field "score" must be a finite number, got 1000'),
    # integers beyond 2**53 are not all float64 numbers: 2**53 + 1 and 2**53 would tie as scores
    "integer_score_beyond_2_53": (lambda d: d[1].update(score=2**53 + 1), r'detections\[1\]: field "score" = 9007199254740993 is an integer beyond 2\*\*53'),
    "numpy_integer_score_beyond_2_53": (lambda d: d[0].update(score=np.int64(-(2**60))), r'detections\[0\]: field "score" = -1152921504606846976 is an integer beyond'),
    "integer_in_bbox_too_large_for_a_float": (lambda d: d[0].update(bbox=[10**400, 0, 1, 1]), r'detections\[0\]: field "bbox" must hold finite numbers'),
    "boolean_score_among_numbers": (lambda d: d[1].update(score=True), r'detections\[1\]: field "score" must be a finite number, got true'),
    "boolean_image_id_among_integers": (lambda d: d[1].update(image_id=True), r'detections\[1\]: field "image_id" must be an integer, got true'),
    "boolean_in_bbox_among_numbers": (lambda d: d[1].update(bbox=[0, 0, True, 2]), r'detections\[1\]: field "bbox" must be a list of 4 numbers'),
}


@pytest.mark.parametrize("case", DET_CASES, ids=list(DET_CASES))
def test_bad_detections_name_the_field(case):
    change, message = DET_CASES[case]
    detections = small_dets()
    change(detections)
    with pytest.raises(DataFormatError, match="^dets.json: " + message):
        parse_detections(detections, small_gt(), source="dets.json")


def test_detections_not_a_list():
    with pytest.raises(DataFormatError, match="expected a JSON list of detections, got an object"):
        parse_detections({"image_id": 3}, small_gt(), source="dets.json")


def test_read_detections_checks_against_ground_truth(tmp_path):
    path = tmp_path / "dets.json"
    path.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}]))
    assert len(read_detections(path)) == 1  # no ground truth: fields only
    with pytest.raises(DataFormatError, match="not among the ground truth's images"):
        read_detections(path, small_gt())


def test_numpy_unsigned_integer_ids_are_accepted():
    # model outputs often carry labels as np.uint8 / np.uint32; they are integers like any other
    detections = [{**d, "category_id": np.uint8(d["category_id"]), "image_id": np.uint64(d["image_id"])} for d in small_dets()]
    parsed = parse_detections(detections, small_gt())
    np.testing.assert_array_equal(parsed.image, [0, 1])
    np.testing.assert_array_equal(parsed.category, [1, 0])


NUMPY_CASES = {
    # entry 0 holds valid NumPy values; the error must name entry 1, the bad one, and why
    "score": ({"score": np.float32(0.5)}, {"score": math.nan}, r'detections\[1\]: field "score" must be a finite number, got NaN'),
    "image_id": ({"image_id": np.int64(3)}, {"image_id": 7.5}, r'detections\[1\]: field "image_id" must be an integer, got 7.5'),
    "bbox_array": ({"bbox": np.array([1.0, 2.0, 3.0, 4.0])}, {"bbox": [0, 0, -1, 2]}, r'detections\[1\]: field "bbox" has a negative width'),
    "bbox_tuple": ({"bbox": (1, 2, 3, 4)}, {"bbox": [0, 0, -1, 2]}, r'detections\[1\]: field "bbox" has a negative width'),
    "bbox_numpy_numbers": ({"bbox": [np.float32(1), 2, 3, 4]}, {"bbox": [0, 0, -1, 2]}, r'detections\[1\]: field "bbox" has a negative width'),
    "bad_bbox_of_numpy_numbers": ({}, {"bbox": [np.float32(0), 0, -1, 2]}, r'detections\[1\]: field "bbox" has a negative width or height, got \[0.0, 0, -1, 2\]'),
}


@pytest.mark.parametrize("case", NUMPY_CASES, ids=list(NUMPY_CASES))
def test_error_names_the_bad_entry_among_numpy_values(case):
    good, bad, message = NUMPY_CASES[case]
    detections = small_dets()
    detections[0].update(good)
    detections[1].update(bad)
    with pytest.raises(DataFormatError, match="^dets.json: " + message):
        parse_detections(detections, small_gt(), source="dets.json")


def test_error_names_the_bad_annotation_among_numpy_values():
    gt = small_gt()
    gt["annotations"][0].update(area=np.float32(10.5), iscrowd=np.int64(0))
    gt["annotations"][1].update(iscrowd="yes")
    with pytest.raises(DataFormatError, match=r'^gt.json: annotations\[1\]: field "iscrowd" must be a finite number, got "yes"'):
        parse_ground_truth(gt, source="gt.json")


def test_image_sizes_may_be_integral_numbers_of_any_kind_and_file_names_may_be_absent():
    gt = small_gt()
    gt["images"][0].update(width=640.0, height=np.int64(480))
    del gt["images"][1]["file_name"]
    parsed = parse_ground_truth(gt)
    assert parsed.image_names == ("", "b.jpg")  # sorted by id: 3, 7
