"""COCO box mAP of a detector's predictions, scored by pycocotools' COCOeval (the metric TAO logs as val_mAP).

Predictions come as transformers' ``post_process_object_detection`` returns them: per image a dict with
``scores`` [K], ``labels`` [K] (0-based class indices) and ``boxes`` [K, 4] as absolute pixel ``x0, y0, x1, y1``
in the image's original size (the ``target_sizes`` passed to the post-processor).
"""

import contextlib
import io
import math
from typing import Dict, Mapping, Optional, Sequence

import torch

# COCOeval.stats positions of the metrics reported (its summarize() order).
COCO_METRICS = {"mAP": 0, "mAP50": 1, "mAP75": 2, "mAP_small": 3, "mAP_medium": 4, "mAP_large": 5}


def load_coco(json_file: str):
    """pycocotools' COCO index of ``json_file``, without its progress prints."""
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(json_file)


def coco_results(predictions: Mapping[int, Mapping[str, torch.Tensor]], label_to_category: Sequence[int]) -> list:
    """COCO's result list (``image_id, category_id, bbox [x, y, w, h], score``) from post-processed predictions."""
    results = []
    for image_id, prediction in predictions.items():
        boxes = prediction["boxes"].detach().float().cpu()
        widths_heights = boxes[:, 2:] - boxes[:, :2]
        xywh = torch.cat([boxes[:, :2], widths_heights], dim=1).tolist()
        labels = prediction["labels"].detach().cpu().tolist()
        scores = prediction["scores"].detach().float().cpu().tolist()
        for box, label, score in zip(xywh, labels, scores):
            results.append(
                {"image_id": int(image_id), "category_id": label_to_category[label], "bbox": box, "score": score}
            )
    return results


def coco_detection_metrics(
    coco_gt,
    predictions: Mapping[int, Mapping[str, torch.Tensor]],
    label_to_category: Optional[Sequence[int]] = None,
) -> Dict[str, float]:
    """``{"mAP", "mAP50", "mAP75", "mAP_small", "mAP_medium", "mAP_large"}`` of ``predictions`` against
    ``coco_gt`` (a pycocotools ``COCO`` or the path of a COCO JSON), over every ground-truth image.

    ``label_to_category[k]`` is the category id of label ``k``; by default the ground truth's category ids in
    ascending order (label 0 is the smallest id), the mapping transformers' COCO detectors are trained with.
    An image without a prediction counts as detecting nothing; an empty ``predictions`` scores 0. A size with
    no ground-truth object (COCOeval's -1) reports NaN.
    """
    from pycocotools.cocoeval import COCOeval

    if isinstance(coco_gt, str):
        coco_gt = load_coco(coco_gt)
    if label_to_category is None:
        label_to_category = sorted(coco_gt.getCatIds())
    unknown = sorted(set(int(i) for i in predictions) - set(coco_gt.getImgIds()))
    if unknown:
        raise ValueError(f"predictions name image ids {unknown[:5]} that the ground truth does not hold")
    results = coco_results(predictions, label_to_category)
    if not results:
        return {name: 0.0 for name in COCO_METRICS}
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(results), iouType="bbox")
        evaluator.params.imgIds = sorted(coco_gt.getImgIds())
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats
    return {name: (math.nan if stats[index] < 0 else float(stats[index])) for name, index in COCO_METRICS.items()}
