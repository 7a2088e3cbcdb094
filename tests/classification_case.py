"""A tiny trained classification-KD run and labelled eval images, shared by tests/export and tests/eval.

The run is tests/engine/test_classification_kd.py's: ``c_radio_tiny_patch16`` with a 10-class classifier,
distilled for 3 steps from a 10-class ``demo_vit_tiny_patch16`` logits teacher on labelled synthetic shards.
"""

import os
from typing import List, Tuple

import numpy as np
import torch

from radio.data.synthetic import synthetic_image, write_synthetic_shards
from radio.data.views import make_view
from radio.eval.images import iter_image_batches
from tests.engine.test_classification_kd import write_case

NUM_CLASSES = 10
FOLDER_CLASSES = ("ant", "bee", "cat", "dog")  # labels 0..3 of the run's 10


def train_classification_run(root: str) -> str:
    """Train the run under ``root`` (data, teacher weights, spec, results ``root/out``); -> results_dir."""
    from pathlib import Path

    from radio.engine.loop import run
    from radio.run.spec import load_run_config

    run(load_run_config(write_case(Path(root), NUM_CLASSES), []))
    return os.path.join(root, "out")


def write_labelled_folder(root: str, per_class: int = 4, seed: int = 5) -> str:
    """An image folder with one sub-folder per name in ``FOLDER_CLASSES``."""
    rng = np.random.default_rng(seed)
    for name in FOLDER_CLASSES:
        os.makedirs(os.path.join(root, name))
        for i in range(per_class):
            size = [int(v) for v in rng.integers(64, 120, size=2)]
            synthetic_image(rng, *size).save(os.path.join(root, name, f"{i}.png"))
    return root


def write_labelled_shards(root: str, num_images: int = 20) -> str:
    write_synthetic_shards(root, num_images, 8, seed=9, with_cls=True, num_classes=NUM_CLASSES)
    return root


def student_logits(run, path: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """(logits [N, classes], labels [N]) of every image under ``path``, computed directly: the classifier on
    the student's CLS slot 0, images read and normalised as the student sees them."""
    aug = run.cfg.dataset.augmentation
    size = int(run.cfg.dataset.img_size)
    logits, labels = [], []
    with torch.no_grad():
        for images, batch_labels in iter_image_batches(path, size, 7):
            x = make_view(images, size, list(aug.norm_mean), list(aug.norm_std))
            logits.append(run.model.classifier(run.model.student(x).cls_tokens[:, 0]))
            labels.append(batch_labels)
    return torch.cat(logits), torch.cat(labels)


def direct_scores(logits: torch.Tensor, labels: torch.Tensor) -> Tuple[float, float, List[List[int]]]:
    """(top-1, top-5, confusion matrix rows = true class) by counting, sample by sample."""
    n = logits.shape[1]
    confusion = [[0] * n for _ in range(n)]
    top1 = top5 = 0
    for row, label in zip(logits.tolist(), labels.tolist()):
        better = sum(v > row[label] for v in row)  # classes ranked above the true one
        top1 += better == 0
        top5 += better < 5
        confusion[label][max(range(n), key=row.__getitem__)] += 1
    return top1 / len(labels), top5 / len(labels), confusion
