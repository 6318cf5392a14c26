"""Pascal VOC annotation files (XML), read and turned into the COCO-style dict the evaluation uses.

Everingham et al., "The PASCAL Visual Object Classes (VOC) Challenge" (IJCV 2010); the format is
that of ``VOCdevkit/VOC20xx/Annotations/*.xml``: a ``<filename>``, a ``<size>`` and one ``<object>``
per box with ``<name>``, ``<bndbox>`` (xmin, ymin, xmax, ymax: inclusive 1-based pixel indices),
``<difficult>`` and ``<truncated>``.
"""

import re
import xml.etree.ElementTree as ElementTree

from scratchdet._files import require_file
from scratchdet.errors import DataFormatError, FileMissingError, InvalidArgumentError

__all__ = ["VOC_CLASSES", "read_voc_xml", "voc_to_coco"]

# The 20 Pascal VOC classes, in the devkit's order
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


def read_voc_xml(path):
    """Read one Pascal VOC annotation file.

    Returns a dict::

        {"path": str, "filename": str, "size": {"width": int, "height": int, "depth": int},
         "objects": [{"name": str, "bbox": (xmin, ymin, xmax, ymax) floats as in the file,
                      "difficult": 0 or 1, "truncated": 0 or 1}, ...]}

    ``difficult`` and ``truncated`` default to 0 where the file leaves them out or leaves their tag
    empty (``<difficult/>``, as some annotation tools write it), and ``depth`` to 3 where it is absent.
    Raises FileMissingError for a missing file and DataFormatError, naming the file and the field,
    for malformed XML, a missing or non-numeric field (numbers are plain decimals such as ``48``,
    ``48.5`` or ``1e3``), a negative size, or a box with xmax < xmin or ymax < ymin.
    """
    path = require_file(path, "an XML file")
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as error:
        line, column = error.position
        raise DataFormatError(f"{path}: malformed XML at line {line} column {column + 1}") from None
    except OSError as error:
        raise FileMissingError(f"{path}: cannot read the file ({error.strerror or error})") from None
    except (ValueError, LookupError) as error:  # an encoding the parser cannot read ("GBK") or does not know
        raise DataFormatError(f"{path}: cannot decode the XML ({error})") from None
    if root.tag != "annotation":
        raise DataFormatError(f"{path}: expected an <annotation> root element, got <{root.tag}>")

    size = _child(root, "size", path, "annotation")
    record = {
        "path": path,
        "filename": _text(root, "filename", path, "annotation"),
        "size": {
            "width": _size(size, "width", path, "size"),
            "height": _size(size, "height", path, "size"),
            "depth": _size(size, "depth", path, "size") if size.find("depth") is not None else 3,
        },
        "objects": [],
    }
    for index, obj in enumerate(root.findall("object")):
        where = f"object[{index}]"
        box = _child(obj, "bndbox", path, where)
        xmin, ymin, xmax, ymax = (_number(box, key, path, f"{where}/bndbox") for key in ("xmin", "ymin", "xmax", "ymax"))
        if xmax < xmin or ymax < ymin:
            raise DataFormatError(f"{path}: {where}/bndbox: xmax < xmin or ymax < ymin in ({xmin}, {ymin}, {xmax}, {ymax})")
        record["objects"].append(
            {
                "name": _text(obj, "name", path, where),
                "bbox": (xmin, ymin, xmax, ymax),
                "difficult": _flag(obj, "difficult", path, where),
                "truncated": _flag(obj, "truncated", path, where),
            }
        )
    return record


def voc_to_coco(annotations, class_names=None, continuous=False):
    """Turn VOC annotations (from `read_voc_xml`) into a COCO-style ground-truth dict.

    annotations: list of dicts as returned by `read_voc_xml`, one per image
    class_names: the categories, in id order (ids 1, 2, ...), each name once; default: the sorted
                 names found. Use `VOC_CLASSES` for the 20 standard classes.
    continuous: False: boxes keep the file's numbers, ``bbox = [xmin, ymin, xmax - xmin, ymax - ymin]``
                so that ``x + w`` is the file's xmax again; evaluate with ``legacy_voc_pixels=True``
                to count pixels inclusively as the devkit does. True: boxes in scratchdet's own
                convention, edges between pixels counted from the image's corner (a box that covers
                pixels 0..2 is [0, 0, 3, 3] in xywh): VOC's xmin..xmax are the first and last
                covered pixels counted from 1, so ``bbox = [xmin - 1, ymin - 1, xmax - xmin + 1,
                ymax - ymin + 1]``; compare with detections made on the image's pixels (e.g. by
                `selective_search`), evaluated with ``legacy_voc_pixels=False``.

    Images get ids 1..N in the given order, annotations 1..G. Each annotation keeps ``difficult``
    (and ``truncated``); ``area`` is ``w * h``, ``iscrowd`` 0.
    """
    if class_names is None:
        class_names = sorted({obj["name"] for record in annotations for obj in record["objects"]})
    if isinstance(class_names, str):
        raise InvalidArgumentError(f"class_names must be a list of names, got the string {class_names!r}")
    class_names = list(class_names)
    repeated = [name for i, name in enumerate(class_names) if name in class_names[:i]]
    if repeated:
        raise InvalidArgumentError(f"class_names repeats {repeated[0]!r}; each class needs one name")
    category_of = {name: i + 1 for i, name in enumerate(class_names)}
    images, coco_annotations = [], []
    for image_id, record in enumerate(annotations, start=1):
        images.append(
            {"id": image_id, "file_name": record["filename"], "width": record["size"]["width"], "height": record["size"]["height"]}
        )
        for obj in record["objects"]:
            if obj["name"] not in category_of:
                raise DataFormatError(
                    f"{record.get('path', record['filename'])}: object name {obj['name']!r} is not among the classes {list(class_names)}"
                )
            xmin, ymin, xmax, ymax = obj["bbox"]
            w, h = xmax - xmin, ymax - ymin
            if continuous:  # 1-based first and last pixels -> 0-based edges
                xmin, ymin, w, h = xmin - 1, ymin - 1, w + 1, h + 1
            coco_annotations.append(
                {
                    "id": len(coco_annotations) + 1,
                    "image_id": image_id,
                    "category_id": category_of[obj["name"]],
                    "bbox": [xmin, ymin, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                    "difficult": int(obj["difficult"]),
                    "truncated": int(obj.get("truncated", 0)),
                }
            )
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(class_names)]
    return {"images": images, "annotations": coco_annotations, "categories": categories}


def _child(element, tag, path, where):
    child = element.find(tag)
    if child is None:
        raise DataFormatError(f"{path}: {where}: missing <{tag}>")
    return child


def _text(element, tag, path, where):
    text = (_child(element, tag, path, where).text or "").strip()
    if not text:
        raise DataFormatError(f"{path}: {where}: <{tag}> is empty")
    return text


# A decimal number as the annotation files write it ("48", "48.5", "-0.5", "1e3"). Python's float()
# reads more: "4_8" as 48, Arabic-Indic digits, "nan" and "infinity", none of which is a coordinate.
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _number(element, tag, path, where):
    text = _text(element, tag, path, where)
    if not _DECIMAL.fullmatch(text):
        raise DataFormatError(f"{path}: {where}: <{tag}> must be a number, got {text!r}")
    value = float(text)
    if value in (float("inf"), float("-inf")):  # "1e400"
        raise DataFormatError(f"{path}: {where}: <{tag}> must be finite, got {text!r}")
    return value


def _integer(element, tag, path, where):
    value = _number(element, tag, path, where)
    if value != int(value):
        raise DataFormatError(f"{path}: {where}: <{tag}> must be an integer, got {value}")
    return int(value)


def _size(element, tag, path, where):
    """A non-negative integer field of <size> (width, height, depth)."""
    value = _integer(element, tag, path, where)
    if value < 0:
        raise DataFormatError(f"{path}: {where}: <{tag}> must be a non-negative integer, got {value}")
    return value


def _flag(element, tag, path, where):
    """A 0/1 field that may be absent or empty (then 0)."""
    child = element.find(tag)
    if child is None or not (child.text or "").strip():
        return 0
    value = _integer(element, tag, path, where)
    if value not in (0, 1):
        raise DataFormatError(f"{path}: {where}: <{tag}> must be 0 or 1, got {value}")
    return value
