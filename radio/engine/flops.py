"""Model FLOPs per image for throughput and MFU logging (docs/benchmarks.md, "Performance goals").

An analytic count of a ViT's matmuls, which is what MFU is measured against: per block and token,
qkv + proj + MLP = 2·C²·(4 + 2·r) FLOPs and attention 4·N·C, with r the MLP ratio (4 for every registry
ViT but SigLIP's SO400M, within 7 %). Teachers run forward only; the student forward + backward (×3).
For the seed example this gives ≈ 1.46 TFLOP per image, the figure the performance goals quote (docs/benchmarks.md).
"""

from dataclasses import dataclass
from typing import Dict, Optional

import torch

from radio.models.registry import get_model_info

# Dense bf16 tensor-core peaks (TFLOP/s) by device-name fragment; MFU is logged only for these.
_PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}


def vit_flops(depth: int, width: int, tokens: int, mlp_ratio: float = 4.0) -> float:
    """Forward FLOPs of ``depth`` ViT blocks of width ``width`` over ``tokens`` tokens (one image)."""
    per_block = 2 * tokens * width * width * (4 + 2 * mlp_ratio) + 4 * tokens * tokens * width
    return float(depth * per_block)


@dataclass(frozen=True)
class VitShape:
    depth: int
    width: int
    patch_size: int
    prefix_tokens: int

    def tokens(self, size: int) -> int:
        return (size // self.patch_size) ** 2 + self.prefix_tokens


@dataclass(frozen=True)
class TeacherCost:
    """How a teacher's per-image FLOPs follow from its per-sample view size (``ViewPlan`` sizes).

    ``mosaic`` k: one forward at k·size serves k² samples. ``featsharp_factor`` f: the view is f times the
    teacher's resolution R and FeatSharp runs 1 + f² forwards at R (the low-res pass and the f x f tiles),
    plus ``extra`` FLOPs of the upsampler itself (docs/featsharp.md).
    """

    shape: VitShape
    mosaic: int = 1
    featsharp_factor: int = 0  # 0: no FeatSharp; 1: FeatSharp de-biasing only
    extra: float = 0.0

    def per_image(self, size: int) -> float:
        vit = self.shape
        if self.featsharp_factor:
            f = self.featsharp_factor
            forwards = 1 + f * f if f > 1 else 1
            return forwards * vit_flops(vit.depth, vit.width, vit.tokens(size // f)) + self.extra
        k = self.mosaic
        return vit_flops(vit.depth, vit.width, vit.tokens(size * k)) / (k * k)


class StepFlops:
    """FLOPs of one image through every teacher (forward) and the student (forward + backward)."""

    def __init__(self, student: VitShape, teachers: Dict[str, TeacherCost]):
        self.student = student
        self.teachers = teachers
        self._cache: Dict[tuple, float] = {}

    def per_image(self, sizes: Dict[str, int]) -> float:
        """sizes: the step's resolution per view (``student`` and each teacher name)."""
        key = tuple(sorted(sizes.items()))
        if key not in self._cache:
            s = self.student
            total = 3.0 * vit_flops(s.depth, s.width, s.tokens(sizes["student"]))
            for name, t in self.teachers.items():
                total += t.per_image(sizes[name])
            self._cache[key] = total
        return self._cache[key]


def step_flops(student, teachers_cfg, teachers) -> StepFlops:
    """The run's ``StepFlops``: the student (a ``RadioViT``) and each resolved teacher as it runs (``teachers``:
    the built ``FrozenTeacher``s, whose FeatSharp adaptor, if any, adds its cost)."""

    def cost(t) -> TeacherCost:
        info = get_model_info(t.backbone_type)
        shape = VitShape(info.depth, info.embed_dim, info.patch_size, info.num_prefix_tokens)
        adaptor = teachers[t.name].adaptor
        if adaptor is None:
            return TeacherCost(shape, mosaic=t.mosaic)
        return TeacherCost(shape, featsharp_factor=adaptor.input_factor, extra=adaptor.flops_per_image())

    own = VitShape(student.depth, student.embed_dim, student.patch_size, student.num_prefix_tokens)
    return StepFlops(own, {t.name: cost(t) for t in teachers_cfg})


def peak_tflops(device: torch.device) -> Optional[float]:
    """Per-device dense bf16 peak, or None when unknown (CPU, other GPUs): then only TFLOP/s is logged."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for fragment, peak in _PEAK_BF16_TFLOPS.items() if fragment in name), None)
