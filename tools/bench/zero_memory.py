"""Per-rank model-state memory of a student under DDP, ZeRO-2 and ZeRO-3 (computed, not measured).

Model states = parameters + gradients + optimizer state, per rank, training in bf16 with AdamW:
- DDP: fp32 parameters, fp32 gradients, DDP's fp32 gradient buckets (a second copy: Accelerate leaves
  ``gradient_as_bucket_view`` off) and fp32 exp_avg/exp_avg_sq, all replicated: 20 bytes per parameter.
- ZeRO-2 and ZeRO-3: DeepSpeed's own estimators (``estimate_zero2_model_states_mem_needs``,
  ``estimate_zero3_model_states_mem_needs``, no offload): 2 B/param of replicated bf16 working copy plus
  18 B/param / N (bf16 and fp32 gradient partitions, fp32 master, Adam moments) for ZeRO-2; for ZeRO-3
  the working copy is partitioned too and only the largest layer is gathered at a time (4 B x its size).
Communication buckets, activations and the frozen bf16 teachers (replicated on every rank under all three)
come on top.

    python tools/bench/zero_memory.py --ranks 8
"""

import argparse
import os

import torch

os.environ.setdefault("DS_ACCELERATOR", "cpu")

from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs  # noqa: E402
from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs  # noqa: E402

from radio.models.registry import create_model  # noqa: E402

STUDENTS = {
    "ViT-B/16 (c_radio_v3_vit_base_patch16_reg4_dinov2)": "c_radio_v3_vit_base_patch16_reg4_dinov2",
    "ViT-L/16 (c_radio_v3_vit_large_patch16_reg4_dinov2)": "c_radio_v3_vit_large_patch16_reg4_dinov2",
    "ViT-H/16 (c_radio_v3_vit_huge_patch16_reg4_dinov2)": "c_radio_v3_vit_huge_patch16_reg4_dinov2",
    "ViT-g/14 (dinov2_vit_giant_patch14, standing in: no C-RADIO g is registered)": "dinov2_vit_giant_patch14",
}
# The seed example's teachers (specs/radio_multiteacher.yaml): frozen, bf16, replicated on every rank.
SEED_TEACHERS = ("c_radio_v3_vit_huge_patch16_reg4_dinov2", "vit_h_14_siglip_clipa_224")
DDP_BYTES_PER_PARAM = 4 + 4 + 4 + 8  # parameters, gradients, gradient buckets, AdamW moments (fp32)
GIB = 1024**3


def shapes(name: str):
    """(parameter count, largest module's own parameter count), built on the meta device."""
    with torch.device("meta"):
        model = create_model(name)
    total = sum(p.numel() for p in model.parameters())
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    return total, largest


def per_rank_bytes(params: int, largest_layer: int, ranks: int) -> dict:
    _, zero2 = estimate_zero2_model_states_mem_needs(params, num_gpus_per_node=ranks, num_nodes=1, cpu_offload=False)
    _, zero3, _ = estimate_zero3_model_states_mem_needs(
        params, largest_layer, num_gpus_per_node=ranks, num_nodes=1, cpu_offload=False
    )
    return {"DDP": DDP_BYTES_PER_PARAM * params, "ZeRO-2": zero2, "ZeRO-3": zero3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=8)
    args = parser.parse_args()
    print(f"| student | parameters | DDP GiB/rank | ZeRO-2 GiB/rank | ZeRO-3 GiB/rank (at {args.ranks} ranks) |")
    print("|---|---|---|---|---|")
    for label, name in STUDENTS.items():
        params, largest = shapes(name)
        cols = " | ".join(f"{b / GIB:.2f}" for b in per_rank_bytes(params, largest, args.ranks).values())
        print(f"| {label} | {params / 1e6:.1f} M | {cols} |")
    teachers = sum(shapes(name)[0] for name in SEED_TEACHERS)
    print(
        f"\nSeed example teachers ({' + '.join(SEED_TEACHERS)}): {teachers / 1e6:.1f} M parameters, "
        f"{2 * teachers / GIB:.2f} GiB per rank in bf16 under every engine."
    )


if __name__ == "__main__":
    main()
