"""COCO JSON files: ground-truth datasets and detection lists, read, checked and written.

The format is the one of the COCO dataset (Lin et al. 2014, https://cocodataset.org/#format-data):

- ground truth: ``{"images": [{"id": ...}, ...], "categories": [{"id": ..., "name": ...}, ...],
  "annotations": [{"id", "image_id", "category_id", "bbox": [x, y, w, h], "area", "iscrowd"}, ...]}``
  (Pascal VOC's ``"difficult": 1`` may ride along on an annotation);
- detections: ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...]``.

`parse_ground_truth` and `parse_detections` check every field and turn the lists of dicts into flat
NumPy arrays (`GroundTruth`, `Detections`), which is what the evaluation kernels work on. The checks
run vectorised on the whole list; only when one fails does a slow pass walk the entries to name the
first bad one (``detections.json: detections[17]: field "score" must be a finite number, got nan``).
"""

import itertools
import json
import math
import os
from dataclasses import dataclass

import numpy as np

from scratchdet._files import atomic_write, require_file
from scratchdet.errors import DataFormatError, FileMissingError

__all__ = [
    "Detections",
    "GroundTruth",
    "load_json",
    "parse_detections",
    "parse_ground_truth",
    "read_detections",
    "read_ground_truth",
    "write_detections",
    "write_ground_truth",
]

EXACT_INTEGERS = 2**53  # float64 holds every integer of at most this size, and not all larger ones


@dataclass(frozen=True)
class GroundTruth:
    """A COCO ground-truth dataset as flat arrays, one row per annotation (G annotations).

    Images and categories are referred to by their rank in the sorted id lists, the order in which
    pycocotools' COCOeval visits them.

    image_ids:      (I,) int64, the image ids, sorted ascending
    image_names:    tuple of I str, the images' ``file_name`` (``""`` where absent), same order
    category_ids:   (K,) int64, the category ids, sorted ascending
    category_names: tuple of K str, the categories' ``name``, same order
    ann_ids:        (G,) int64, the annotations' ``id``
    image:          (G,) int64, rank of the annotation's image in `image_ids`
    category:       (G,) int64, rank of the annotation's category in `category_ids`
    boxes:          (G, 4) float64, ``[x, y, w, h]`` exactly as in the file
    area:           (G,) float64, the ``area`` field (``w * h`` where absent); COCO's small / medium /
                    large ranges are decided on it, not on the box
    iscrowd:        (G,) bool, the ``iscrowd`` field (False where absent)
    difficult:      (G,) bool, Pascal VOC's ``difficult`` field (False where absent)
    """

    image_ids: np.ndarray
    image_names: tuple
    category_ids: np.ndarray
    category_names: tuple
    ann_ids: np.ndarray
    image: np.ndarray
    category: np.ndarray
    boxes: np.ndarray
    area: np.ndarray
    iscrowd: np.ndarray
    difficult: np.ndarray


@dataclass(frozen=True)
class Detections:
    """A COCO detection list as flat arrays, one row per detection (D detections), in file order.

    image:    (D,) int64, rank of the detection's image in the ground truth's `image_ids`
    category: (D,) int64, rank of the detection's category in the ground truth's `category_ids`
    boxes:    (D, 4) float64, ``[x, y, w, h]`` exactly as in the file
    scores:   (D,) float64, confidence, higher is more confident
    """

    image: np.ndarray
    category: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray


# ----------------------------------------------------------------------------------------------
# Reading and writing files
# ----------------------------------------------------------------------------------------------


def load_json(path):
    """Read a JSON file; a missing file or malformed JSON raises a scratchdet error naming it.

    The file is UTF-8 text, with or without a byte-order mark (as some Windows tools write it).
    Returns the decoded object. Malformed JSON is reported with its line and column; a directory,
    an unreadable file or JSON nested too deeply for Python's parser raise a one-line error too.
    """
    path = require_file(path, "a JSON file")
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f)
    except json.JSONDecodeError as error:
        raise DataFormatError(
            f"{path}: malformed JSON at line {error.lineno} column {error.colno}: {error.msg}"
        ) from None
    except UnicodeDecodeError as error:
        raise DataFormatError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except RecursionError:
        raise DataFormatError(f"{path}: JSON nested too deeply to read") from None
    except ValueError as error:  # e.g. an integer of more than 4300 digits, which Python won't parse
        raise DataFormatError(f"{path}: malformed JSON: {error}") from None
    except OSError as error:
        raise FileMissingError(f"{path}: cannot read the file ({error.strerror or error})") from None


def read_ground_truth(path):
    """Read and check a COCO ground-truth JSON file; returns the dict (unchanged) as loaded.

    Raises FileMissingError for a missing file and DataFormatError, naming the file and the field,
    for malformed JSON or content (see `parse_ground_truth`).
    """
    gt = load_json(path)
    parse_ground_truth(gt, source=os.fspath(path))
    return gt


def read_detections(path, ground_truth=None):
    """Read and check a COCO detection-list JSON file; returns the list as loaded.

    With `ground_truth` (a dict or a `GroundTruth`), image and category ids are checked against it.
    """
    dets = load_json(path)
    if ground_truth is None:
        _check_detection_fields(dets, os.fspath(path))
    else:
        parse_detections(dets, ground_truth, source=os.fspath(path))
    return dets


def write_ground_truth(path, gt):
    """Check a COCO ground-truth dict and write it to `path` as JSON, atomically.

    NumPy numbers and arrays in it (``np.int64`` ids, an ``np.ndarray`` bbox) are written as JSON
    numbers and lists.
    """
    parse_ground_truth(gt, source="ground truth to write")
    _dump_json(path, gt)


def write_detections(path, detections):
    """Check a COCO detection list and write it to `path` as JSON, atomically (NumPy values as in
    `write_ground_truth`)."""
    _check_detection_fields(detections, "detections to write")
    _dump_json(path, detections)


def _dump_json(path, value):
    """Write `value` to `path` as strict JSON, atomically: a NaN or infinity anywhere (JSON has
    neither; Python would write the non-standard tokens NaN and Infinity), or a value JSON cannot
    hold at all (a set, a date, a key that is not a string or a number, in a field the checks leave
    alone such as ``info``), is a DataFormatError and nothing is written."""
    try:
        with atomic_write(path) as f:
            json.dump(value, f, default=_plain_json, allow_nan=False)
    except ValueError as error:  # json's words for a NaN or infinity: "Out of range float values are not JSON compliant"
        raise DataFormatError(f"{os.fspath(path)}: cannot write it as JSON: {error}") from None
    except TypeError as error:  # "Object of type set is not JSON serializable", "keys must be str, int, ..."
        raise DataFormatError(f"{os.fspath(path)}: cannot write it as JSON: {error}") from None


def _plain_json(value):
    """`json.dump`'s fallback: NumPy scalars and arrays as the Python numbers and lists they hold."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# ----------------------------------------------------------------------------------------------
# From lists of dicts to flat arrays, with checks
# ----------------------------------------------------------------------------------------------


def parse_ground_truth(gt, source="ground truth"):
    """Check a COCO ground-truth dict and return it as a `GroundTruth` of flat arrays.

    gt:     dict with lists ``images`` (each with an integer ``id``; optional ``file_name`` a
            non-empty string, ``width`` and ``height`` positive integers), ``categories`` (``id``,
            ``name``) and ``annotations`` (``id``, ``image_id``, ``category_id``, ``bbox`` of 4
            finite numbers with ``w, h >= 0``; optional ``area``, and ``iscrowd`` and ``difficult``
            as 0 / 1 or false / true)
    source: how error messages name the input (a file path, or "ground truth")

    Raises DataFormatError naming `source`, the entry and the field for: a missing or mistyped
    field, duplicate ids, an annotation whose image or category is not listed, a non-finite or
    negative box size.
    """
    if isinstance(gt, GroundTruth):
        return gt
    if not isinstance(gt, dict):
        raise DataFormatError(f"{source}: expected a JSON object with images, annotations and categories, got {_kind(gt)}")
    for key in ("images", "annotations", "categories"):
        if key not in gt:
            raise DataFormatError(f'{source}: missing field "{key}"')
        if not isinstance(gt[key], list):
            raise DataFormatError(f'{source}: field "{key}" must be a list, got {_kind(gt[key])}')
    images, annotations, categories = gt["images"], gt["annotations"], gt["categories"]

    # 1. images and categories: unique integer ids, sorted
    image_ids = _integer_field(images, "id", source, "images")
    image_order = np.argsort(image_ids, kind="stable")
    image_ids = image_ids[image_order]
    _check_unique(image_ids, source, "images", "id")
    image_names = tuple(images[i].get("file_name", "") for i in image_order)
    _check_image_fields(images, source)

    category_ids = _integer_field(categories, "id", source, "categories")
    names = [_string(c, "name", source, "categories", i) for i, c in enumerate(categories)]
    category_order = np.argsort(category_ids, kind="stable")
    category_ids = category_ids[category_order]
    _check_unique(category_ids, source, "categories", "id")
    category_names = tuple(names[i] for i in category_order)
    if len(set(category_names)) < len(category_names):
        repeated = next(name for name in category_names if category_names.count(name) > 1)
        raise DataFormatError(f'{source}: categories: field "name" repeats the value {_show(repeated)}')

    # 2. annotations: ids, references, boxes
    ann_ids = _integer_field(annotations, "id", source, "annotations")
    _check_unique(np.sort(ann_ids), source, "annotations", "id")
    image = _ranks(_integer_field(annotations, "image_id", source, "annotations"), image_ids, source, "annotations", "image_id", "images")
    category = _ranks(
        _integer_field(annotations, "category_id", source, "annotations"), category_ids, source, "annotations", "category_id", "categories"
    )
    boxes = _box_field(annotations, source, "annotations")
    with np.errstate(over="ignore"):
        box_area = boxes[:, 2] * boxes[:, 3]  # (A,) the area where an annotation gives none
    too_large = ~np.isfinite(2.0 * box_area)  # as `scratchdet.boxes`: IoU adds two areas
    if too_large.any():
        i = int(np.flatnonzero(too_large)[0])
        raise DataFormatError(f'{source}: annotations[{i}]: field "bbox" is too large: twice its width times height overflows')
    area = _optional_number_field(annotations, "area", box_area, source, "annotations")
    iscrowd = _flag_field(annotations, "iscrowd", source, "annotations")
    difficult = _flag_field(annotations, "difficult", source, "annotations")
    return GroundTruth(
        image_ids=image_ids,
        image_names=image_names,
        category_ids=category_ids,
        category_names=category_names,
        ann_ids=ann_ids,
        image=image,
        category=category,
        boxes=boxes,
        area=area,
        iscrowd=iscrowd,
        difficult=difficult,
    )


def parse_detections(detections, ground_truth, source="detections"):
    """Check a COCO detection list against its ground truth and return it as `Detections`.

    detections:   list of dicts with ``image_id``, ``category_id`` (both listed in the ground
                  truth), ``bbox`` (4 finite numbers, ``w, h >= 0``) and ``score`` (finite number)
    ground_truth: the ground-truth dict or its `GroundTruth`
    source:       how error messages name the input

    Raises DataFormatError naming `source`, the entry and the field for every bad case.
    """
    if isinstance(detections, Detections):
        return detections
    gt = parse_ground_truth(ground_truth)
    image_id, category_id, boxes, scores = _check_detection_fields(detections, source)
    image = _ranks(image_id, gt.image_ids, source, "detections", "image_id", "ground truth's images")
    category = _ranks(category_id, gt.category_ids, source, "detections", "category_id", "ground truth's categories")
    return Detections(image=image, category=category, boxes=boxes, scores=scores)


def _check_detection_fields(detections, source):
    """The fields of a detection list as arrays: image_id (D,), category_id (D,), boxes (D, 4), scores (D,)."""
    if not isinstance(detections, list):
        raise DataFormatError(f"{source}: expected a JSON list of detections, got {_kind(detections)}")
    image_id = _integer_field(detections, "image_id", source, "detections")
    category_id = _integer_field(detections, "category_id", source, "detections")
    boxes = _box_field(detections, source, "detections")
    scores = _number_field(detections, "score", source, "detections")
    return image_id, category_id, boxes, scores


# ----------------------------------------------------------------------------------------------
# Field extraction: a vectorised fast path, and a slow path that names the first bad entry
# ----------------------------------------------------------------------------------------------


def _kind(value):
    """A short description of a JSON value's type, for error messages."""
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), f"a {type(value).__name__}")


def _show(value):
    """A JSON value in an error message, cut short (NumPy numbers and arrays as the JSON they write)."""
    try:
        text = json.dumps(value, default=_plain_json)
    except (TypeError, ValueError):  # not JSON at all, e.g. a set
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _entry(entries, listname, source, index):
    """entries[index], checked to be a dict."""
    entry = entries[index]
    if not isinstance(entry, dict):
        raise DataFormatError(f"{source}: {listname}[{index}] must be an object, got {_kind(entry)}")
    return entry


def _column(entries, key, listname, source):
    """[e[key] for e in entries]; on a missing key or a non-dict entry, name the first bad entry."""
    try:
        return [e[key] for e in entries]
    except (KeyError, TypeError, IndexError):
        for i in range(len(entries)):
            if key not in _entry(entries, listname, source, i):
                raise DataFormatError(f'{source}: {listname}[{i}]: missing field "{key}"') from None
        raise


# The checks below accept NumPy scalars and arrays wherever the vectorised path does (dicts built in
# Python often hold np.int64 ids, np.float32 scores, np.ndarray boxes), so that when it fails the slow
# path names the entry that is really bad.


def _is_number(value):
    """A Python or NumPy integer or float, not a boolean."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _is_integer(value):
    """A Python or NumPy integer that int64 holds, not a boolean."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and -(2**63) <= int(value) < 2**63


def _is_flag(value):
    """A Python or NumPy boolean."""
    return isinstance(value, (bool, np.bool_))


def _is_sequence(value):
    """A list, a tuple or a 1-D NumPy array, such as a bbox ``[x, y, w, h]``."""
    return isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.ndim == 1)


def _is_finite(value):
    """math.isfinite, False for an integer too large for a float (where math.isfinite raises)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _has_bool(values, nested=False):
    """True if a list of values (of lists of values, if `nested`) holds a JSON true/false (or a NumPy bool).

    NumPy turns ``[0.9, True]`` into a float array without complaint, so the dtype cannot tell.
    """
    flat = itertools.chain.from_iterable(values) if nested else values
    types = set(map(type, flat))
    return bool in types or np.bool_ in types


def _integer_field(entries, key, source, listname):
    """The integer field `key` of every entry, as (N,) int64."""
    values = _column(entries, key, listname, source)
    try:
        array = np.asarray(values) if values else np.zeros(0, dtype=np.int64)
    except (ValueError, OverflowError):
        array = None
    # (NumPy reads integers of 2**63 and more as uint64, which int64 cannot hold: the slow path names them)
    if array is None or array.dtype.kind != "i" or array.ndim != 1 or _has_bool(values):
        for i, v in enumerate(values):
            if not _is_integer(v):
                raise DataFormatError(f'{source}: {listname}[{i}]: field "{key}" must be an integer, got {_show(v)}')
        array = np.array(values, dtype=np.int64)
    return array.astype(np.int64, copy=False)


def _number_field(entries, key, source, listname):
    """The finite numeric field `key` of every entry, as (N,) float64."""
    return _to_numbers(_column(entries, key, listname, source), key, source, listname)


def _optional_number_field(entries, key, default, source, listname, allow_bool=False):
    """Like `_number_field`, with `default[i]` where entry i has no `key` (and true/false as 1/0 if `allow_bool`)."""
    try:
        values = [e[key] for e in entries]
    except KeyError:
        values = [e.get(key, d) for e, d in zip(entries, default.tolist())]
    return _to_numbers(values, key, source, listname, allow_bool)


def _flag_field(entries, key, source, listname):
    """The optional 0/1 (or false/true) field `key` of every entry, as (N,) bool, False where absent.

    Other numbers are refused: pycocotools would read ``"iscrowd": 0.5`` as a crowd in one place
    (``gt["iscrowd"]`` is truthy) and as a regular object in another (``int(0.5) == 0``).
    """
    values = _optional_number_field(entries, key, np.zeros(len(entries)), source, listname, allow_bool=True)  # (N,)
    bad = (values != 0) & (values != 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataFormatError(f'{source}: {listname}[{i}]: field "{key}" must be 0 or 1, got {_show(entries[i][key])}')
    return values != 0


def _to_numbers(values, key, source, listname, allow_bool=False):
    kinds = "biuf" if allow_bool else "iuf"
    try:
        array = np.asarray(values) if values else np.zeros(0)
    except (ValueError, OverflowError):
        array = None
    if (
        array is None
        or array.dtype.kind not in kinds
        or array.ndim != 1
        or not np.isfinite(array.astype(np.float64)).all()
        or (not allow_bool and _has_bool(values))
    ):
        for i, v in enumerate(values):
            if not (_is_number(v) or (allow_bool and _is_flag(v))) or not _is_finite(v):
                raise DataFormatError(f'{source}: {listname}[{i}]: field "{key}" must be a finite number, got {_show(v)}')
        array = None  # numbers, but not one array of them (an integer beyond int64, a mix of types)
    # float64 holds every integer up to 2**53 and not all beyond, so refuse those (two distinct scores
    # would tie); one beyond it in a list of floats has already become a float of magnitude >= 2**53
    if array is None or (np.abs(array.astype(np.float64)) >= EXACT_INTEGERS).any():
        for i, v in enumerate(values):
            if isinstance(v, (int, np.integer)) and not _is_flag(v) and abs(int(v)) > EXACT_INTEGERS:
                raise DataFormatError(
                    f'{source}: {listname}[{i}]: field "{key}" = {v} is an integer beyond 2**53, which a float64 '
                    "cannot hold exactly; write it as a float"
                )
        array = np.array(values, dtype=np.float64)
    return array.astype(np.float64, copy=False)


def _box_field(entries, source, listname):
    """The ``bbox`` field ``[x, y, w, h]`` of every entry as (N, 4) float64; finite, w >= 0, h >= 0."""
    values = _column(entries, "bbox", listname, source)
    try:
        array = np.asarray(values) if values else np.zeros((0, 4))
    except (ValueError, OverflowError):
        array = None
    if (
        array is None
        or array.dtype.kind not in "iuf"
        or array.ndim != 2
        or array.shape[1] != 4
        or not np.isfinite(array).all()
        or (array[:, 2:] < 0).any()
        or _has_bool(values, nested=True)
    ):
        for i, v in enumerate(values):
            if not _is_sequence(v) or len(v) != 4 or not all(_is_number(c) for c in v):
                raise DataFormatError(f'{source}: {listname}[{i}]: field "bbox" must be a list of 4 numbers [x, y, w, h], got {_show(v)}')
            if not all(_is_finite(c) for c in v):
                raise DataFormatError(f'{source}: {listname}[{i}]: field "bbox" must hold finite numbers, got {_show(v)}')
            if v[2] < 0 or v[3] < 0:
                raise DataFormatError(f'{source}: {listname}[{i}]: field "bbox" has a negative width or height, got {_show(v)}')
        array = np.array(values, dtype=np.float64)
    return array.astype(np.float64, copy=False).reshape(-1, 4)


def _string(entry_dict, key, source, listname, index):
    if not isinstance(entry_dict, dict):
        raise DataFormatError(f"{source}: {listname}[{index}] must be an object, got {_kind(entry_dict)}")
    if key not in entry_dict:
        raise DataFormatError(f'{source}: {listname}[{index}]: missing field "{key}"')
    value = entry_dict[key]
    if not isinstance(value, str):
        raise DataFormatError(f'{source}: {listname}[{index}]: field "{key}" must be a string, got {_show(value)}')
    return value


def _check_image_fields(images, source):
    """The optional fields of each ``images`` entry that scratchdet reads: ``file_name`` a non-empty
    string, ``width`` and ``height`` positive integers (integral numbers, such as 640.0, pass)."""
    for i, image in enumerate(images):  # (each one an object: its id was read)
        if "file_name" in image and not (isinstance(image["file_name"], str) and image["file_name"]):
            name = _show(image["file_name"])
            raise DataFormatError(f'{source}: images[{i}]: field "file_name" must be a non-empty string, got {name}')
        for key in ("width", "height"):
            value = image.get(key, 1)
            number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
            if not (number and value >= 1 and float(value).is_integer()):
                raise DataFormatError(f'{source}: images[{i}]: field "{key}" must be a positive integer, got {_show(value)}')


def _check_unique(sorted_ids, source, listname, key):
    """Raise if the sorted id array holds a repeated value."""
    repeated = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1])
    if repeated.size:
        raise DataFormatError(f'{source}: {listname}: field "{key}" repeats the value {int(sorted_ids[repeated[0]])}')


def _ranks(ids, sorted_ids, source, listname, key, where):
    """Position of each id in `sorted_ids` (N,) int64; an id not there raises, naming the entry."""
    ranks = np.searchsorted(sorted_ids, ids)
    inside = ranks < len(sorted_ids)
    found = np.zeros(len(ids), dtype=bool)
    found[inside] = sorted_ids[ranks[inside]] == ids[inside]
    if not found.all():
        i = int(np.flatnonzero(~found)[0])
        raise DataFormatError(f'{source}: {listname}[{i}]: field "{key}" is {int(ids[i])}, which is not among the {where}')
    return ranks.astype(np.int64, copy=False)
