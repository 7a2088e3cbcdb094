"""Detection distillation building blocks for transformers DETR-family detectors (docs/detection.md).

Modules (import from them directly; this package imports nothing):

- ``coco_eval``: COCO box mAP / mAP50 / mAP75 / S/M/L of post-processed predictions (pycocotools).
- ``matching``: student↔teacher query pairs: ``hungarian``, ``index``, ``gt``.
- ``losses``: logits KD on matched pairs (class divergence, box L1 + GIoU), feature KD (L1, L2, TAO's IOU
  mask), denoising-query stripping.
- ``features``: forward hooks capturing named features, the student→teacher 1x1 projection.
"""
