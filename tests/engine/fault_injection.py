"""`radio/train.py` with faults injected into chosen micro-batches, for the non-finite-step tests.

RADIO_TEST_FAULTS="nan_loss@1:4,nan_grad@0:9" makes rank 1's loss NaN in its 4th micro-batch and rank 0's
gradients NaN (with a finite loss) in its 9th. Micro-batches count from 0 over the whole run.
"""

import os
import sys

import torch

from radio.engine.objective import DistillationObjective


class NanGradient(torch.autograd.Function):
    """Zero in the forward pass, NaN gradients in the backward pass."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.new_zeros(())

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return torch.full_like(x, float("nan"))


def faults_for_this_rank() -> dict:
    rank = int(os.environ.get("RANK", "0"))
    faults = {}
    for item in filter(None, os.environ.get("RADIO_TEST_FAULTS", "").split(",")):
        kind, where = item.split("@")
        fault_rank, call = (int(v) for v in where.split(":"))
        if fault_rank == rank:
            faults[call] = kind
    return faults


def install() -> None:
    faults, calls = faults_for_this_rank(), [0]
    original = DistillationObjective.__call__

    def call(self, preds, targets, labels):
        result = original(self, preds, targets, labels)
        kind = faults.get(calls[0])
        calls[0] += 1
        if kind == "nan_loss":
            result.loss = result.loss * float("nan")
        elif kind == "nan_grad":
            some_prediction = next(p for pred in preds.values() for p in pred.values())
            result.loss = result.loss + NanGradient.apply(some_prediction)
        return result

    DistillationObjective.__call__ = call


if __name__ == "__main__":
    install()
    from radio.train import main

    sys.exit(main())
