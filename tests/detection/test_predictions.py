"""Post-processing equal to transformers' image processors, and COCO mAP of a detector over a synthetic set."""

import json
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from radio.detection.predictions import detections, evaluate_detector
from tests.detection.conftest import tiny_deformable_detr, tiny_rtdetr

PIXELS = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
ORIG_SIZES = torch.tensor([[480, 640], [300, 200]])  # (height, width)


def eval_outputs(model):
    with torch.no_grad():
        return model.eval()(pixel_values=PIXELS)


def assert_same_detections(found, expected):
    assert len(found) == len(expected)
    for mine, theirs in zip(found, expected):
        assert torch.equal(mine["labels"], theirs["labels"])
        torch.testing.assert_close(mine["scores"], theirs["scores"])
        torch.testing.assert_close(mine["boxes"], theirs["boxes"])


def test_detections_equal_rtdetr_post_processing():
    from transformers import RTDetrImageProcessor

    outputs = eval_outputs(tiny_rtdetr(num_queries=12))
    # RT-DETR's processor keeps the top num_queries (query, class) pairs
    expected = RTDetrImageProcessor().post_process_object_detection(outputs, threshold=0, target_sizes=ORIG_SIZES)
    assert_same_detections(detections(outputs, ORIG_SIZES, max_detections=12), expected)


@pytest.mark.parametrize("max_detections", [7, 100])  # 100 > 12 queries x 3 classes: every pair
def test_detections_equal_deformable_detr_post_processing(max_detections):
    from transformers import DeformableDetrImageProcessor

    outputs = eval_outputs(tiny_deformable_detr(num_queries=12))
    expected = DeformableDetrImageProcessor().post_process_object_detection(
        outputs, threshold=0, target_sizes=ORIG_SIZES, top_k=max_detections
    )
    found = detections(outputs, ORIG_SIZES, max_detections=max_detections)
    assert found[0]["scores"].shape == (min(max_detections, 36),)
    assert_same_detections(found, expected)


@dataclass
class Batch:
    """The fields of radio/detection/data.py's DetectionBatch that evaluation reads."""

    pixel_values: torch.Tensor
    image_ids: torch.Tensor
    orig_sizes: torch.Tensor


class GroundTruthDetector(nn.Module):
    """Answers each image with its ground truth (confident logits, exact normalised boxes) shifted by ``shift``
    box widths; an image is recognised by the value its pixels are filled with (its id)."""

    def __init__(self, coco: dict, num_queries: int = 8, shift: float = 0.0):
        super().__init__()
        self.coco, self.num_queries, self.shift = coco, num_queries, shift
        self.categories = sorted(c["id"] for c in coco["categories"])
        self.calls_in_train_mode = self.calls_with_grad = 0

    def forward(self, pixel_values):
        self.calls_in_train_mode += self.training
        self.calls_with_grad += torch.is_grad_enabled()
        images = {image["id"]: image for image in self.coco["images"]}
        logits = torch.full((len(pixel_values), self.num_queries, len(self.categories)), -10.0)
        boxes = torch.full((len(pixel_values), self.num_queries, 4), 0.5)
        for i, image_id in enumerate(pixel_values[:, 0, 0, 0].round().long().tolist()):
            image = images[image_id]
            annotations = [a for a in self.coco["annotations"] if a["image_id"] == image_id]
            for query, annotation in enumerate(annotations):
                x, y, w, h = annotation["bbox"]
                logits[i, query, self.categories.index(annotation["category_id"])] = 10.0
                cx = x + w / 2 + self.shift * w
                boxes[i, query] = torch.tensor(
                    [cx / image["width"], (y + h / 2) / image["height"], w / image["width"], h / image["height"]]
                )
        return SimpleNamespace(logits=logits, pred_boxes=boxes)


def batches_of(coco: dict, batch_size: int = 3):
    images = coco["images"]
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        ids = torch.tensor([image["id"] for image in chunk])
        yield Batch(
            pixel_values=ids.float()[:, None, None, None].expand(-1, 3, 4, 4),
            image_ids=ids,
            orig_sizes=torch.tensor([[image["height"], image["width"]] for image in chunk]),
        )


@pytest.fixture(scope="module")
def val_set(coco_set):
    json_file = coco_set["val"]["json_file"]
    with open(json_file) as stream:
        return json_file, json.load(stream)


def test_evaluate_detector_scores_ground_truth_answers_perfectly(val_set):
    json_file, coco = val_set
    model = GroundTruthDetector(coco).train()
    metrics = evaluate_detector(model, batches_of(coco), json_file, device="cpu")
    assert metrics["mAP"] == pytest.approx(1.0) and metrics["mAP50"] == pytest.approx(1.0)
    assert model.calls_in_train_mode == model.calls_with_grad == 0
    assert model.training  # restored


def test_evaluate_detector_scores_shifted_boxes_lower(val_set):
    json_file, coco = val_set
    # a shift of a quarter of a box width keeps IoU 0.6: found at IoU 0.5, missed at 0.75
    metrics = evaluate_detector(GroundTruthDetector(coco, shift=0.25), batches_of(coco), json_file, device="cpu")
    assert metrics["mAP50"] == pytest.approx(1.0) and metrics["mAP75"] == pytest.approx(0.0)
    assert metrics["mAP"] < 0.5
