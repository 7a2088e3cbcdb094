"""Classification scores of logits on labelled images: top-1, top-k and the confusion matrix (+ its picture).

A sample is top-k correct when its label is among its k largest logits (``torch.topk``); the confusion
matrix counts (true label, top-1 prediction) pairs, rows = true label, columns = prediction.
"""

from typing import Dict, List, Optional

import numpy as np
import torch

TOP_K = 5  # the second accuracy reported (capped at the number of classes)

# Above this many classes the picture has no per-cell counts / tick labels (they would not be readable).
_ANNOTATE_MAX_CLASSES = 20
_TICK_LABELS_MAX_CLASSES = 40


class ClassificationScore:
    """Running top-1 / top-k counts and the confusion matrix of ``num_classes`` classes."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.k = min(TOP_K, num_classes)
        self.images = 0
        self.top1_correct = 0
        self.topk_correct = 0
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def add(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """logits [B, num_classes], labels int64 [B] in [0, num_classes)."""
        logits, labels = logits.float().cpu(), labels.cpu()
        topk = logits.topk(self.k, dim=1).indices  # [B, k], best first
        self.top1_correct += int((topk[:, 0] == labels).sum())
        self.topk_correct += int((topk == labels[:, None]).any(dim=1).sum())
        pairs = labels * self.num_classes + topk[:, 0]
        self.confusion += torch.bincount(pairs, minlength=self.num_classes**2).reshape(self.num_classes, -1)
        self.images += int(labels.shape[0])

    def as_dict(self) -> Dict[str, object]:
        """``{"top1", "top5" (fractions in [0, 1]), "top5_k" (the k used), "images"}``."""
        n = max(self.images, 1)
        return {"top1": self.top1_correct / n, "top5": self.topk_correct / n, "top5_k": self.k, "images": self.images}


def class_names_for(num_classes: int, folder_names: Optional[List[str]]) -> List[str]:
    """One name per class index: the labelled folder's class sub-folder names, else the index itself."""
    names = list(folder_names or [])
    return names[:num_classes] + [str(i) for i in range(len(names), num_classes)]


def save_confusion_png(confusion: torch.Tensor, class_names: List[str], path: str, title: str) -> None:
    """A PNG of the confusion matrix [N, N] (rows true class, columns prediction), counts in the cells
    when N is small."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = confusion.cpu().numpy()
    n = counts.shape[0]
    side = min(12.0, 2.0 + 0.45 * n)
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    shown = ax.imshow(counts, cmap="Blues", interpolation="nearest")
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="images")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    if n <= _TICK_LABELS_MAX_CLASSES:
        ax.set_xticks(np.arange(n), labels=class_names, rotation=90)
        ax.set_yticks(np.arange(n), labels=class_names)
    if n <= _ANNOTATE_MAX_CLASSES:
        threshold = counts.max() / 2 if counts.size else 0
        for i in range(n):
            for j in range(n):
                colour = "white" if counts[i, j] > threshold else "black"
                ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", color=colour, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
