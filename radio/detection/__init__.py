"""``task: detection``: distilling transformers DETR-family detectors (docs/detection.md).

Modules (import from them directly; this package imports nothing):

- ``schema`` / ``validate`` / ``bindings``: the spec (TAO's field names), its checks, ``distill.bindings`` resolved.
- ``models``: detectors on timm backbones (build, load the teacher strictly, ``load_teacher_enc_dec``, export).
- ``data``: COCO sources, the resumable training loader, evaluation batches.
- ``features``: forward hooks capturing named features, the student→teacher 1x1 projection.
- ``matching``: student↔teacher query pairs: ``hungarian``, ``index``, ``gt``.
- ``losses``: logits KD on matched pairs (class divergence, box L1 + GIoU), feature KD (L1, L2, TAO's IOU
  mask), denoising-query stripping.
- ``objective`` / ``step`` / ``task``: the trained module and its loss, one optimizer step, the task the engine's
  loop drives (``radio/engine/loop.py``).
- ``predictions`` / ``coco_eval`` / ``run_files``: post-processing, COCO mAP, ``radio eval`` / ``radio export``.
- ``commands``: ``radio coco-demo`` and the detection side of ``radio eval`` / ``radio export``.
"""
