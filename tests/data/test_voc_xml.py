"""Pascal VOC XML: reading annotation files, errors naming file and field, conversion to COCO style."""

import pytest

from scratchdet.data import VOC_CLASSES, parse_ground_truth, read_voc_xml, voc_to_coco
from scratchdet.errors import DataFormatError, FileMissingError, InvalidArgumentError
from scratchdet.eval import evaluate_voc

# A file in the layout of VOC2007/Annotations/000001.xml
VOC_XML = """<annotation>
    <folder>VOC2007</folder>
    <filename>000001.jpg</filename>
    <size><width>353</width><height>500</height><depth>3</depth></size>
    <object>
        <name>dog</name><pose>Left</pose><truncated>1</truncated><difficult>0</difficult>
        <bndbox><xmin>48</xmin><ymin>240</ymin><xmax>195</xmax><ymax>371</ymax></bndbox>
    </object>
    <object>
        <name>person</name><pose>Left</pose><truncated>1</truncated><difficult>1</difficult>
        <bndbox><xmin>8</xmin><ymin>12</ymin><xmax>352</xmax><ymax>498</ymax></bndbox>
    </object>
</annotation>
"""


@pytest.fixture
def voc_file(tmp_path):
    path = tmp_path / "000001.xml"
    path.write_text(VOC_XML)
    return path


def test_read_voc_xml_keeps_the_files_numbers(voc_file):
    record = read_voc_xml(voc_file)
    assert record["filename"] == "000001.jpg"
    assert record["size"] == {"width": 353, "height": 500, "depth": 3}
    assert record["objects"] == [
        {"name": "dog", "bbox": (48.0, 240.0, 195.0, 371.0), "difficult": 0, "truncated": 1},
        {"name": "person", "bbox": (8.0, 12.0, 352.0, 498.0), "difficult": 1, "truncated": 1},
    ]


def test_missing_difficult_and_truncated_default_to_zero(tmp_path):
    path = tmp_path / "a.xml"
    path.write_text(VOC_XML.replace("<truncated>1</truncated><difficult>0</difficult>", ""))
    obj = read_voc_xml(path)["objects"][0]
    assert (obj["difficult"], obj["truncated"]) == (0, 0)


def test_empty_difficult_and_truncated_tags_read_as_zero(tmp_path):
    path = tmp_path / "a.xml"
    path.write_text(VOC_XML.replace("<truncated>1</truncated><difficult>0</difficult>", "<truncated/><difficult> </difficult>"))
    obj = read_voc_xml(path)["objects"][0]
    assert (obj["difficult"], obj["truncated"]) == (0, 0)


@pytest.mark.parametrize("encoding", ["GBK", "no-such-encoding"])
def test_an_encoding_the_parser_cannot_read_is_a_data_format_error(tmp_path, encoding):
    path = tmp_path / "a.xml"
    path.write_bytes(f'<?xml version="1.0" encoding="{encoding}"?><annotation/>'.encode())
    with pytest.raises(DataFormatError, match="a.xml: cannot decode the XML"):
        read_voc_xml(path)


def test_directory_instead_of_xml_file_says_so(tmp_path):
    with pytest.raises(FileMissingError, match="is a directory, expected an XML file"):
        read_voc_xml(tmp_path)


def test_unreadable_xml_file_raises_a_scratchdet_error(voc_file, monkeypatch):
    import xml.etree.ElementTree as ElementTree

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(ElementTree, "parse", refuse)  # as root, chmod 000 would still read
    with pytest.raises(FileMissingError, match="000001.xml: cannot read the file \\(Permission denied\\)"):
        read_voc_xml(voc_file)


def test_voc_to_coco_rejects_repeated_class_names(voc_file):
    with pytest.raises(InvalidArgumentError, match="class_names repeats 'dog'"):
        voc_to_coco([read_voc_xml(voc_file)], class_names=["dog", "person", "dog"])


def test_missing_file(tmp_path):
    with pytest.raises(FileMissingError, match="nope.xml: no such file"):
        read_voc_xml(tmp_path / "nope.xml")


BAD_XML = {
    "malformed": (VOC_XML.replace("</size>", ""), r"malformed XML at line \d+ column \d+"),
    "wrong_root": (VOC_XML.replace("annotation>", "notes>"), "expected an <annotation> root element, got <notes>"),
    "missing_size": (VOC_XML.replace("<size><width>353</width><height>500</height><depth>3</depth></size>", ""), "annotation: missing <size>"),
    "missing_bndbox": (VOC_XML.replace("<bndbox><xmin>48</xmin><ymin>240</ymin><xmax>195</xmax><ymax>371</ymax></bndbox>", ""), r"object\[0\]: missing <bndbox>"),
    "non_numeric_xmin": (VOC_XML.replace("<xmin>8</xmin>", "<xmin>eight</xmin>"), r"object\[1\]/bndbox: <xmin> must be a number, got 'eight'"),
    "empty_name": (VOC_XML.replace("<name>dog</name>", "<name> </name>"), r"object\[0\]: <name> is empty"),
    "inverted_box": (VOC_XML.replace("<xmax>195</xmax>", "<xmax>40</xmax>"), r"object\[0\]/bndbox: xmax < xmin"),
    "difficult_two": (VOC_XML.replace("<difficult>1</difficult>", "<difficult>2</difficult>"), r"object\[1\]: <difficult> must be 0 or 1"),
    # Python's float() reads "4_8" as 48 and Arabic-Indic digits as 48; no VOC file means either
    "underscore_in_number": (VOC_XML.replace("<xmin>48</xmin>", "<xmin>4_8</xmin>"), r"object\[0\]/bndbox: <xmin> must be a number, got '4_8'"),
    "non_ascii_digits": (VOC_XML.replace("<xmin>48</xmin>", "<xmin>\u0664\u0668</xmin>"), r"object\[0\]/bndbox: <xmin> must be a number"),
    "not_finite": (VOC_XML.replace("<xmax>195</xmax>", "<xmax>1e400</xmax>"), r"object\[0\]/bndbox: <xmax> must be finite, got '1e400'"),
    "negative_width": (VOC_XML.replace("<width>353</width>", "<width>-353</width>"), r"size: <width> must be a non-negative integer, got -353"),
}


@pytest.mark.parametrize("case", BAD_XML, ids=list(BAD_XML))
def test_bad_xml_names_file_and_field(case, tmp_path):
    text, message = BAD_XML[case]
    path = tmp_path / "bad.xml"
    path.write_text(text)
    with pytest.raises(DataFormatError, match=message) as info:
        read_voc_xml(path)
    assert str(info.value).startswith(str(path))


def test_voc_to_coco_keeps_difficult_and_the_files_coordinates(voc_file):
    gt = voc_to_coco([read_voc_xml(voc_file)], class_names=VOC_CLASSES)
    assert [c["name"] for c in gt["categories"]] == list(VOC_CLASSES)
    dog, person = gt["annotations"]
    assert dog["category_id"] == VOC_CLASSES.index("dog") + 1
    assert dog["bbox"] == [48.0, 240.0, 147.0, 131.0]  # x + w is the file's xmax again
    assert (dog["difficult"], person["difficult"]) == (0, 1)
    assert gt["images"] == [{"id": 1, "file_name": "000001.jpg", "width": 353, "height": 500}]
    parse_ground_truth(gt)  # a valid COCO-style dataset


def test_voc_to_coco_in_the_continuous_convention_matches_detections_on_the_pixels(tmp_path):
    # an object covering 0-based pixels 0..2 (VOC: 1..3) is the box [0, 0, 3, 3] drawn on the image
    path = tmp_path / "a.xml"
    path.write_text(
        "<annotation><filename>a.jpg</filename><size><width>10</width><height>10</height></size>"
        "<object><name>dog</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>3</xmax><ymax>3</ymax></bndbox></object>"
        "</annotation>"
    )
    gt = voc_to_coco([read_voc_xml(path)], continuous=True)
    assert gt["annotations"][0]["bbox"] == [0.0, 0.0, 3.0, 3.0] and gt["annotations"][0]["area"] == 9.0
    exact = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 3, 3], "score": 1.0}]
    assert evaluate_voc(gt, exact, iou_threshold=0.99)["mAP"] == 1.0
    assert evaluate_voc(voc_to_coco([read_voc_xml(path)]), exact, iou_threshold=0.5)["mAP"] == 0.0  # the file's numbers


def test_voc_to_coco_default_classes_are_the_sorted_names(voc_file):
    gt = voc_to_coco([read_voc_xml(voc_file)])
    assert [c["name"] for c in gt["categories"]] == ["dog", "person"]


def test_voc_to_coco_rejects_unknown_class(voc_file):
    with pytest.raises(DataFormatError, match="object name 'person' is not among the classes"):
        voc_to_coco([read_voc_xml(voc_file)], class_names=["dog"])


def test_devkit_numbers_from_voc_files_with_legacy_pixels(voc_file):
    # a detection one pixel narrower than the dog: 147 x 132 of 148 x 132 inclusive pixels
    gt = voc_to_coco([read_voc_xml(voc_file)])
    dets = [{"image_id": 1, "category_id": 1, "bbox": [49.0, 240.0, 146.0, 131.0], "score": 0.9}]
    result = evaluate_voc(gt, dets, legacy_voc_pixels=True)
    assert result["per_class"] == {"dog": 1.0, "person": -1.0}  # the only person is difficult
    assert evaluate_voc(gt, dets, iou_threshold=147 * 132 / (148 * 132), legacy_voc_pixels=True)["mAP"] == 1.0
    assert evaluate_voc(gt, dets, iou_threshold=147 * 132 / (148 * 132) + 1e-9, legacy_voc_pixels=True)["mAP"] == 0.0
