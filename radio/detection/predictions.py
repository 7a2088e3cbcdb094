"""A detector's outputs as scored boxes in pixels, and its COCO mAP over a validation set.

``detections`` is what the families' transformers image processors do in ``post_process_object_detection``
for sigmoid (focal-loss) detectors, written directly in torch so that evaluation needs no image processor.
"""

import contextlib
from typing import Dict, Iterable, List

import torch
from torch import nn

from radio.detection.coco_eval import coco_detection_metrics


def detections(outputs, orig_sizes: torch.Tensor, *, max_detections: int = 100) -> List[Dict[str, torch.Tensor]]:
    """Per image ``{"scores" [K], "labels" [K], "boxes" [K, 4]}``: the top ``K = min(max_detections, N * C)``
    (query, class) pairs by ``sigmoid(logits)``, boxes in pixel ``x0, y0, x1, y1`` of the original image.

    ``outputs``: a forward pass in eval mode (``logits`` [B, N, C], ``pred_boxes`` [B, N, 4] normalised
    ``cx, cy, w, h``; no denoising queries). ``orig_sizes`` [B, 2]: each image's ``(height, width)`` in pixels;
    the normalised boxes are scaled to it, which is exact for an image resized (not padded) to the input size.
    """
    logits = outputs.logits.float()
    batch, queries, classes = logits.shape
    scores, index = logits.sigmoid().flatten(1).topk(min(max_detections, queries * classes), dim=1)
    query, labels = index // classes, index % classes
    cx, cy, w, h = outputs.pred_boxes.float().unbind(-1)
    corners = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)
    heights, widths = orig_sizes.to(corners).unbind(1)
    corners = corners * torch.stack([widths, heights, widths, heights], dim=1)[:, None, :]
    boxes = corners.gather(1, query[..., None].expand(-1, -1, 4))
    return [{"scores": scores[i], "labels": labels[i], "boxes": boxes[i]} for i in range(batch)]


def evaluate_detector(
    model: nn.Module,
    batches: Iterable,
    coco_json_file: str,
    *,
    device,
    dtype: torch.dtype = torch.float32,
    max_detections: int = 100,
) -> Dict[str, float]:
    """COCO box mAP of ``model`` over ``batches`` (``radio.detection.coco_eval.coco_detection_metrics``: keys
    ``mAP``, ``mAP50``, ``mAP75``, ``mAP_small/medium/large``), against the ground truth of ``coco_json_file``.

    Each batch has ``pixel_values`` [B, 3, H, W], ``image_ids`` [B] (the JSON's image ids) and ``orig_sizes``
    [B, 2] ``(height, width)``. The model runs in eval mode without autograd, under autocast to ``dtype`` unless
    that is fp32; its train/eval mode is restored afterwards. Label ``k`` is the JSON's ``k``-th smallest
    category id.
    """
    device = torch.device(device)
    autocast = (
        torch.autocast(device_type=device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
    )
    was_training = model.training
    model.eval()
    predictions = {}
    try:
        with torch.no_grad(), autocast:
            for batch in batches:
                outputs = model(pixel_values=batch.pixel_values.to(device))
                found = detections(outputs, batch.orig_sizes, max_detections=max_detections)
                for image_id, prediction in zip(batch.image_ids, found):
                    predictions[int(image_id)] = {k: v.cpu() for k, v in prediction.items()}
    finally:
        model.train(was_training)
    return coco_detection_metrics(coco_json_file, predictions)
