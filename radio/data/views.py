"""Per-step view resolutions and the on-device view computation.

Workers emit one uint8 crop per sample at ``ViewPlan.max_size(step)``; every view (the student and each
teacher) is made from that crop on the device by ``make_view``, so all views share one crop region.
"""

import functools
import random
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ViewSpec:
    """One model input.

    ``size``: resolution in pixels when no stochastic resolution is drawn. ``patch_size``: the size is
    rounded to the nearest multiple of it (``None``: no rounding). ``stochastic_resolutions``:
    ``{resolution: probability}`` drawn once per global step; empty: always ``size``. ``follow``:
    ``"student"`` makes a teacher take the student's resolution of the step (``match_student_resolution``),
    then align it to its own patch size. ``mean``/``std``: per-channel normalisation on the 0-1 scale.
    """

    name: str
    size: int
    patch_size: Optional[int]
    stochastic_resolutions: Dict[int, float] = field(default_factory=dict)
    mean: Sequence[float] = (0.48145466, 0.4578275, 0.40821073)
    std: Sequence[float] = (0.26862954, 0.26130258, 0.27577711)
    follow: Optional[str] = None


def align_to_patch(size: int, patch_size: Optional[int]) -> int:
    """Nearest multiple of ``patch_size`` (at least one patch); ``size`` itself when unset."""
    if not patch_size:
        return int(size)
    return max(patch_size, int(round(size / patch_size)) * patch_size)


def _draw_resolution(choices: Dict[int, float], rng: random.Random) -> int:
    resolutions = sorted(int(r) for r in choices)
    weights = [float(choices[r]) for r in sorted(choices, key=int)]
    return rng.choices(resolutions, weights=weights, k=1)[0]


class ViewPlan:
    """The resolutions of every view at every global step: a pure function of (seed, step)."""

    def __init__(self, student: ViewSpec, teachers: List[ViewSpec], seed: int):
        names = [student.name] + [t.name for t in teachers]
        if len(set(names)) != len(names):
            raise ValueError(f"ViewPlan: view names must be unique, got {names}")
        self.student = student
        self.teachers = list(teachers)
        self.seed = int(seed)

    def sizes_for_step(self, step: int) -> Dict[str, int]:
        """``{view name: resolution}`` for global ``step``; identical on every rank and worker."""
        rng = random.Random(f"radio-views/{self.seed}/{int(step)}")
        student_size = self.student.size
        if self.student.stochastic_resolutions:
            student_size = _draw_resolution(self.student.stochastic_resolutions, rng)
        sizes = {self.student.name: align_to_patch(student_size, self.student.patch_size)}
        for teacher in self.teachers:
            if teacher.follow not in (None, self.student.name):
                raise ValueError(f"view {teacher.name!r}: follow must be None or {self.student.name!r}")
            size = student_size if teacher.follow else teacher.size
            if teacher.stochastic_resolutions:
                size = _draw_resolution(teacher.stochastic_resolutions, rng)
            sizes[teacher.name] = align_to_patch(size, teacher.patch_size)
        return sizes

    def max_size(self, step: int) -> int:
        """Side of the uint8 crops that workers emit at ``step``: the largest view resolution."""
        return max(self.sizes_for_step(step).values())


def make_view(images: torch.Tensor, size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 crops [B,3,S,S] (any device) -> normalised float32 [B,3,size,size] on the same device.

    Antialiased bilinear resize (never nearest), then ``(x/255 - mean) / std`` per channel.
    """
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"make_view expects uint8 [B,3,S,S], got {images.dtype} {tuple(images.shape)}")
    # Crops arrive channels-last (decoded HWC); the models run faster on the default layout (CPU: the
    # student's patch-embedding backward ~3x, docs/benchmarks.md), and the conversion is free in the cast.
    x = images.to(torch.float32, memory_format=torch.contiguous_format)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    mean_t, std_t = _channel_constants(tuple(mean), tuple(std), x.device)
    return (x / 255.0 - mean_t) / std_t


@functools.lru_cache(maxsize=64)
def _channel_constants(mean: tuple, std: tuple, device: torch.device):
    """[1,3,1,1] float32 mean and std on ``device``, made once (a fresh host-to-device copy per view and
    step would be a small synchronous transfer each time)."""
    as_tensor = functools.partial(torch.tensor, dtype=torch.float32, device=device)
    return as_tensor(mean).view(1, 3, 1, 1), as_tensor(std).view(1, 3, 1, 1)
