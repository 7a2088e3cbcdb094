"""COCO mAP from post-processed predictions, scored by pycocotools."""

import math

import pytest
import torch

from radio.detection.coco_eval import COCO_METRICS, coco_detection_metrics, load_coco


def ground_truth_as_predictions(coco, shift: float = 0.0):
    """What a perfect detector's ``post_process_object_detection`` returns (pixel x0,y0,x1,y1, 0-based labels,
    score 1), every box moved right by ``shift`` times its width."""
    categories = sorted(coco.getCatIds())
    predictions = {}
    for image_id in coco.getImgIds():
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        boxes = torch.tensor([a["bbox"] for a in annotations], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 0] += shift * boxes[:, 2]
        boxes[:, 2:] += boxes[:, :2]
        predictions[image_id] = {
            "boxes": boxes,
            "labels": torch.tensor([categories.index(a["category_id"]) for a in annotations]),
            "scores": torch.ones(len(annotations)),
        }
    return predictions


@pytest.fixture(scope="module")
def val_coco(coco_set):
    return load_coco(coco_set["val"]["json_file"])


def test_a_perfect_prediction_scores_one(val_coco):
    metrics = coco_detection_metrics(val_coco, ground_truth_as_predictions(val_coco))
    assert set(metrics) == set(COCO_METRICS)
    for name in ("mAP", "mAP50", "mAP75"):
        assert metrics[name] == pytest.approx(1.0)
    # a size range with objects scores 1, one without reports NaN (COCOeval's -1)
    assert all(math.isnan(metrics[n]) or metrics[n] == pytest.approx(1.0) for n in metrics)


def test_shifted_boxes_score_lower_the_stricter_the_iou(val_coco):
    metrics = coco_detection_metrics(val_coco, ground_truth_as_predictions(val_coco, shift=0.2))
    # a 20% shift leaves IoU 0.8/1.2 = 0.67: a hit at IoU 0.5, a miss at 0.75
    assert metrics["mAP50"] == pytest.approx(1.0)
    assert metrics["mAP75"] == pytest.approx(0.0)
    assert 0.0 < metrics["mAP"] < 1.0


def test_wrong_labels_score_zero(val_coco):
    predictions = ground_truth_as_predictions(val_coco)
    for prediction in predictions.values():
        prediction["labels"] = (prediction["labels"] + 1) % 3
    assert coco_detection_metrics(val_coco, predictions)["mAP"] == pytest.approx(0.0)


def test_no_predictions_score_zero(coco_set, val_coco):
    empty = {
        image_id: {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long), "scores": torch.zeros(0)}
        for image_id in val_coco.getImgIds()
    }
    assert coco_detection_metrics(val_coco, empty) == {name: 0.0 for name in COCO_METRICS}
    assert coco_detection_metrics(coco_set["val"]["json_file"], {})["mAP"] == 0.0


def test_an_unknown_image_id_is_refused(val_coco):
    with pytest.raises(ValueError, match="image ids \\[999\\]"):
        coco_detection_metrics(
            val_coco, {999: {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0), "scores": torch.zeros(0)}}
        )
