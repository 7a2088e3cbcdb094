"""Driving a feature normaliser the way the training step does."""

import torch


def update(norm, features: torch.Tensor) -> bool:
    """One optimizer step of one micro-batch: observe its features, then the step's refresh (True if due)."""
    norm.observe(features)
    return norm.refresh_if_due()
