"""Weighted k-nearest-neighbour classification on frozen features (the DINO kNN protocol).

Features are L2-normalised, neighbours are the ``k`` training features of highest cosine similarity, and
each neighbour votes for its label with weight exp(similarity / T).
"""

import torch
import torch.nn.functional as F


@torch.no_grad()
def knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    query_features: torch.Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk: int = 256,
) -> torch.Tensor:
    """Predicted labels int64 [M] for query_features [M, D], given train_features [N, D] and
    train_labels int64 [N] in [0, num_classes). ``k`` is capped at N; ties go to the lower label."""
    if train_features.shape[0] != train_labels.shape[0] or train_features.shape[0] == 0:
        raise ValueError(
            f"need one label per training feature, got {train_features.shape[0]} features and "
            f"{train_labels.shape[0]} labels"
        )
    bank = F.normalize(train_features.float(), dim=1)
    k = min(k, bank.shape[0])
    preds = []
    for start in range(0, query_features.shape[0], chunk):
        query = F.normalize(query_features[start : start + chunk].float(), dim=1)
        sims, idx = (query @ bank.T).topk(k, dim=1)  # [m, k]
        votes = torch.zeros(query.shape[0], num_classes, dtype=torch.float64)
        votes.scatter_add_(1, train_labels[idx], (sims.double() / temperature).exp())
        preds.append(votes.argmax(dim=1))
    return torch.cat(preds) if preds else torch.zeros(0, dtype=torch.int64)


def knn_top1(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    query_features: torch.Tensor,
    query_labels: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
) -> float:
    """Top-1 accuracy (fraction in [0, 1]) of ``knn_predict`` on labelled queries."""
    num_classes = int(max(train_labels.max(), query_labels.max())) + 1
    preds = knn_predict(train_features, train_labels, query_features, num_classes, k, temperature)
    return float((preds == query_labels).float().mean())
