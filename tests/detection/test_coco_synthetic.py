"""The synthetic COCO writer: valid COCO JSON, exact boxes inside the images, deterministic by seed."""

import filecmp
import json
import os

import numpy as np
import pytest
from PIL import Image, ImageDraw

from radio.data.coco_synthetic import DETECTION_CLASSES, SHAPES, draw_shape, write_synthetic_coco
from radio.detection.coco_eval import load_coco
from radio.errors import SpecError


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("box", [[3, 5, 17, 9], [0, 0, 12, 31], [10, 2, 40, 40]])
def test_a_drawn_shape_spans_exactly_its_box(shape, box):
    canvas = Image.new("L", (64, 64))
    draw_shape(ImageDraw.Draw(canvas), shape, box, fill=255)
    rows, cols = np.nonzero(np.asarray(canvas))
    x, y, w, h = box
    assert (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1) == (x, y, x + w, y + h)


def test_the_json_loads_in_pycocotools_with_boxes_inside_their_images(coco_set):
    for split, source in coco_set.items():
        coco = load_coco(source["json_file"])
        assert len(coco.getImgIds()) == {"train": 6, "val": 4}[split]
        assert coco.getCatIds() == [1, 2, 3]
        assert len(coco.getAnnIds()) >= len(coco.getImgIds())
        for image in coco.loadImgs(coco.getImgIds()):
            on_disk = Image.open(os.path.join(source["image_dir"], image["file_name"]))
            assert on_disk.size == (image["width"], image["height"])
            for annotation in coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]])):
                x, y, w, h = annotation["bbox"]
                assert 0 <= x and 0 <= y and x + w <= image["width"] and y + h <= image["height"]
                assert annotation["area"] == w * h


def test_each_box_holds_its_class_colour_at_its_centre(coco_set):
    """The JPEG shows the annotated shape where its box says: the box centre is inside all three shapes."""
    source = coco_set["val"]
    coco = load_coco(source["json_file"])
    for image in coco.loadImgs(coco.getImgIds()):
        pixels = np.asarray(Image.open(os.path.join(source["image_dir"], image["file_name"])).convert("RGB"))
        for annotation in coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]])):
            x, y, w, h = annotation["bbox"]
            centre = pixels[int(y + h / 2), int(x + w / 2)].astype(int)
            colour = np.array(DETECTION_CLASSES[annotation["category_id"] - 1][2])
            assert np.abs(centre - colour).max() <= 45, (annotation, centre)


def test_the_same_seed_writes_the_same_set_and_another_seed_another(tmp_path):
    first = write_synthetic_coco(str(tmp_path / "a"), {"val": 2}, seed=5)["val"]
    second = write_synthetic_coco(str(tmp_path / "b"), {"val": 2}, seed=5)["val"]
    other = write_synthetic_coco(str(tmp_path / "c"), {"val": 2}, seed=6)["val"]
    assert json.load(open(first["json_file"])) == json.load(open(second["json_file"]))
    assert filecmp.cmp(os.path.join(first["image_dir"], "000001.jpg"), os.path.join(second["image_dir"], "000001.jpg"))
    assert json.load(open(first["json_file"])) != json.load(open(other["json_file"]))


def test_more_classes_than_the_palette_is_refused(tmp_path):
    with pytest.raises(SpecError, match="num_classes=13"):
        write_synthetic_coco(str(tmp_path), {"val": 1}, seed=0, num_classes=13)
