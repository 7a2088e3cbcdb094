"""Driving a feature normaliser the way the training step does."""

import torch


def observe_and_refresh(norm, *micro_batches: torch.Tensor) -> bool:
    """One optimizer step: observe its micro-batches' features, the step's refresh after the first (True if
    it refreshed)."""
    norm.observe(micro_batches[0], starts_step=True)
    refreshed = norm.refresh_if_due()
    for features in micro_batches[1:]:
        norm.observe(features, starts_step=False)
    return refreshed
