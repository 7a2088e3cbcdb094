"""Weighted kNN (DINO protocol): a hand-computed case and separable synthetic data."""

import torch

from radio.eval.knn import knn_predict, knn_top1

# Bank: A=[1,0] label 0, B=[0,1] label 1, C=[0.8,0.6] label 1. Query [2,0] (normalised to [1,0]) has cosine
# 1, 0, 0.8 to A, B, C.
BANK = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6]])
BANK_LABELS = torch.tensor([0, 1, 1])
QUERY = torch.tensor([[2.0, 0.0]])


def test_hand_computed_votes():
    # T=1, k=3: label 0 gets e^1 = 2.718, label 1 gets e^0 + e^0.8 = 3.226 -> 1.
    assert knn_predict(BANK, BANK_LABELS, QUERY, num_classes=2, k=3, temperature=1.0).tolist() == [1]
    # T=0.07, k=3: e^(1/0.07) = 1.6e6 beats e^0 + e^(0.8/0.07) = 9.2e4 -> 0 (sharp weights favour the nearest).
    assert knn_predict(BANK, BANK_LABELS, QUERY, num_classes=2, k=3, temperature=0.07).tolist() == [0]
    # k=1: only A votes; k larger than the bank is capped at its size (k=20 behaves as k=3).
    assert knn_predict(BANK, BANK_LABELS, QUERY, num_classes=2, k=1, temperature=1.0).tolist() == [0]
    assert knn_predict(BANK, BANK_LABELS, QUERY, num_classes=2, k=20, temperature=1.0).tolist() == [1]


def test_separable_clusters_are_classified_perfectly_and_shuffled_labels_are_not():
    g = torch.Generator().manual_seed(0)
    num_classes, dim = 5, 32
    centres = torch.randn(num_classes, dim, generator=g) * 3

    def sample(n_per_class):
        labels = torch.arange(num_classes).repeat_interleave(n_per_class)
        return centres[labels] + torch.randn(len(labels), dim, generator=g) * 0.5, labels

    train_x, train_y = sample(40)
    val_x, val_y = sample(10)
    assert knn_top1(train_x, train_y, val_x, val_y, k=20, temperature=0.07) == 1.0
    shuffled = train_y[torch.randperm(len(train_y), generator=g)]
    assert knn_top1(train_x, shuffled, val_x, val_y, k=20, temperature=0.07) < 0.6


def test_queries_are_processed_in_chunks_with_the_same_result():
    g = torch.Generator().manual_seed(1)
    bank, labels, queries = (
        torch.randn(50, 8, generator=g),
        torch.randint(0, 4, (50,), generator=g),
        torch.randn(30, 8, generator=g),
    )
    whole = knn_predict(bank, labels, queries, num_classes=4, chunk=1000)
    assert torch.equal(knn_predict(bank, labels, queries, num_classes=4, chunk=7), whole)
