"""Top-1 / top-k counts, the confusion matrix and its picture (no model needed)."""

import torch
from PIL import Image

from radio.eval.classification import ClassificationScore, class_names_for, save_confusion_png
from tests.classification_case import direct_scores


def test_scores_equal_counting_sample_by_sample_over_several_batches():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(37, 8, generator=g)
    labels = torch.randint(0, 8, (37,), generator=g)
    score = ClassificationScore(8)
    for start in range(0, 37, 10):
        score.add(logits[start : start + 10], labels[start : start + 10])
    top1, top5, confusion = direct_scores(logits, labels)
    result = score.as_dict()
    assert result == {"top1": top1, "top5": top5, "top5_k": 5, "images": 37}
    assert score.confusion.tolist() == confusion
    assert 0 < top1 < top5 < 1  # random logits: neither measure is trivially 0 or 1


def test_top_k_is_capped_at_the_number_of_classes():
    score = ClassificationScore(3)
    score.add(torch.tensor([[0.0, 1.0, 2.0], [3.0, 2.0, 1.0]]), torch.tensor([0, 0]))
    assert score.as_dict() == {"top1": 0.5, "top5": 1.0, "top5_k": 3, "images": 2}
    assert score.confusion.tolist() == [[1, 0, 1], [0, 0, 0], [0, 0, 0]]


def test_class_names_are_folder_names_then_indices():
    assert class_names_for(4, ["cat", "dog"]) == ["cat", "dog", "2", "3"]
    assert class_names_for(2, None) == ["0", "1"]


def test_confusion_picture_is_written(tmp_path):
    path = str(tmp_path / "confusion.png")
    save_confusion_png(torch.tensor([[3, 1], [0, 2]]), ["cat", "dog"], path, title="t")
    width, height = Image.open(path).size
    assert width > 100 and height > 100
