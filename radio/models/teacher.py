"""Frozen teachers: a registry model with its checkpoint loaded eagerly, run in bf16 or fp32 (a run's
``distill.teacher_precision``) under inference mode (optionally compiled, or with FP8 Linear layers:
``radio.models.teacher_speed``)."""

import contextlib
import time
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn

from radio.errors import CheckpointError, SpecError
from radio.models.checkpoint_io import LoadReport, load_into
from radio.models.cradio import RadioViT
from radio.models.featsharp import load_featsharp
from radio.models.hf_config import check_activation
from radio.models.registry import create_model, get_model_info
from radio.models.teacher_speed import check_fp8_supported, compile_featurizer, enable_fused_attention, quantize_fp8


@dataclass
class TeacherOutput:
    """Float32 teacher targets. ``spatial`` [B, Ct, H/p, W/p] (every teacher); ``summary`` [B, Ds] (None for a
    teacher without one, e.g. SAM); ``logits`` [B, N] (None unless it classifies)."""

    spatial: torch.Tensor
    summary: Optional[torch.Tensor]
    logits: Optional[torch.Tensor]


def teacher_features(
    model: nn.Module, x: torch.Tensor, patch_size: int, *, classify: bool = False, project: bool = False
):
    """Run a registry model as a teacher. -> (summary [B, Ds], spatial [B, C, H/p, W/p], logits | None).

    C-RADIO: the ``summary_idxs`` CLS slots concatenated, patch tokens (through the released PHI-S
    normaliser when the checkpoint had one). timm models: the pooled pre-logits vector (or its projection
    through ``head`` when ``project``, as CLIP's embedding), the tokens after the prefix tokens (or the
    last feature map of a convolutional model); ``classify`` also returns ``head``'s logits.
    """
    h, w = x.shape[-2] // patch_size, x.shape[-1] // patch_size
    if isinstance(model, RadioViT):
        out = model(x)
        spatial = out.spatial
        if model.feature_normalizer is not None:
            spatial = model.feature_normalizer(spatial.permute(0, 2, 3, 1).float()).permute(0, 3, 1, 2)
        return model.summary(out.cls_tokens), spatial, None
    feats = model.forward_features(x)
    if feats.dim() == 4:  # convolutional model: already a map
        spatial = feats
    else:
        spatial = feats[:, getattr(model, "num_prefix_tokens", 0) :]
        spatial = spatial.transpose(1, 2).reshape(feats.shape[0], -1, h, w)
    pooled = model.forward_head(feats, pre_logits=True)
    if classify:
        return pooled, spatial, model.forward_head(feats)
    if project:
        return model.forward_head(feats), spatial, None
    return pooled, spatial, None


class FrozenTeacher(nn.Module):
    """A frozen teacher built from the registry with weights from a local file.

    Args:
        backbone_type: registry name (or ``timm/<name>``).
        checkpoint_path: .safetensors / .pth / .pt in any layout ``radio.models.formats`` reads. None only
            in tests (random weights).
        input_size: resolution the position embeddings are resampled to at load; other sizes still work.
        strict: refuse any missing / unexpected / wrong-shape key (the error lists them).
        num_classes: 0 for feature teachers (also downstream-trained models); > 0 builds the classifier
            head and returns ``logits``.
        device, dtype: where and in which precision the teacher is loaded and runs (bf16 by default; a run
            passes ``radio.run.build.teacher_dtype``). Outputs are float32 either way.
        featsharp_checkpoint: a FeatSharp file (``radio.models.featsharp``, loaded strictly into ``adaptor``)
            the teacher's features go through: ``forward`` then takes images at ``input_size ·
            adaptor.input_factor`` and returns spatial maps on the grid ``(input_size / patch) ·
            adaptor.upsample_factor``, computed in float32. ``do_upsample`` False: FeatSharp's de-biasing only.
        compiled: the backbone's forward through ``torch.compile``, one graph per input shape (at most
            ``teacher_speed.COMPILE_SHAPE_LIMIT``, then eager). A FeatSharp adaptor stays eager.
        fp8: the backbone's transformer-block Linears in float8 (torchao, per-row scales; bf16 only); raises
            ``SpecError`` before loading anything where the device has no FP8 or torchao is missing.

    Every attention module with timm's ``fused_attn`` flag runs ``F.scaled_dot_product_attention``.

    Never trained, never wrapped by DDP/DeepSpeed: it is ``eval()`` forever, has no trainable parameters,
    and ``forward`` runs under ``torch.inference_mode``. Outputs are fresh float32 tensors usable in losses.
    """

    def __init__(
        self,
        backbone_type: str,
        checkpoint_path: Optional[str],
        *,
        input_size: int,
        strict: bool = True,
        num_classes: int = 0,
        device=None,
        dtype: torch.dtype = torch.bfloat16,
        featsharp_checkpoint: Optional[str] = None,
        do_upsample: bool = True,
        compiled: bool = False,
        fp8: bool = False,
    ) -> None:
        super().__init__()
        info = get_model_info(backbone_type)
        if fp8:
            check_fp8_supported(torch.device(device) if device is not None else torch.device("cpu"), dtype)
        self.backbone_type = backbone_type
        self.num_classes = num_classes
        # With a strict load every tensor comes from the file, so skip random init: build on the meta
        # device and let the loader assign the checkpoint's tensors (no time spent, no second copy).
        on_meta = checkpoint_path is not None and strict
        with torch.device("meta") if on_meta else contextlib.nullcontext():
            model = create_model(backbone_type, img_size=input_size, num_classes=num_classes)
        if on_meta and set(dict(model.named_buffers())) - set(model.state_dict()):
            # Non-persistent buffers (e.g. rotary tables) are computed at build, not loaded: build for real.
            model = create_model(backbone_type, img_size=input_size, num_classes=num_classes)
        self.load_report: Optional[LoadReport] = None
        started = time.perf_counter()
        if checkpoint_path is not None:
            check_activation(model, backbone_type, checkpoint_path)
            self.load_report = load_into(model, checkpoint_path, strict=strict, role="teacher")
        self.load_seconds = time.perf_counter() - started
        leftover = [n for n, t in model.state_dict(keep_vars=True).items() if t.is_meta]
        leftover += [n for n, b in model.named_buffers() if b.is_meta]
        if leftover:
            raise CheckpointError(f"{checkpoint_path}: tensors not provided by the checkpoint: {leftover[:5]}")
        model.to(device=device, dtype=dtype)
        if isinstance(model, RadioViT) and model.feature_normalizer is not None:
            model.feature_normalizer.float()  # a [C, C] rotation loses too much in bf16
        model.eval().requires_grad_(False)
        enable_fused_attention(model)
        self.fp8_layers = quantize_fp8(model) if fp8 else []
        if fp8 and not self.fp8_layers:
            raise SpecError(
                f"distill.teacher_fp8: teacher {backbone_type} has no transformer-block Linear layer FP8 can run "
                "(widths multiples of 16); set its teacher_fp8 to false."
            )
        self.model = model
        self.dtype = dtype
        self.adaptor = None
        self.adaptor_report: Optional[LoadReport] = None
        if featsharp_checkpoint is not None:
            adaptor, self.adaptor_report = load_featsharp(
                featsharp_checkpoint,
                embed_dim=info.embed_dim,
                patch_size=info.patch_size,
                input_size=input_size,
                do_upsample=do_upsample,
            )
            self.adaptor = adaptor.to(device=device, dtype=torch.float32)

        self.patch_size = info.patch_size
        self.embed_dim = info.embed_dim
        self.input_size = input_size
        if isinstance(model, RadioViT):
            self.summary_dim = len(model.summary_idxs) * model.embed_dim
        elif info.summary_proj and num_classes:
            self.summary_dim = model.num_features  # the head is a classifier now, the summary is the pool
        else:
            self.summary_dim = info.summary_dim
        self.summary_proj = info.summary_proj and not num_classes
        self.has_summary = info.has_summary
        self.compiled = compiled
        self._featurize = compile_featurizer(self._features) if compiled else self._features

    def train(self, mode: bool = True) -> "FrozenTeacher":
        return super().train(False)  # frozen: stays in eval mode whatever the caller does

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _features(self, x: torch.Tensor):
        """x [N,3,H,W] in ``dtype`` -> (summary [N,Ds], spatial [N,C,H/p,W/p], logits [N,K] | None); the
        function ``compiled`` compiles."""
        return teacher_features(
            self.model, x, self.patch_size, classify=self.num_classes > 0, project=self.summary_proj
        )

    def _summary_and_spatial(self, x: torch.Tensor):
        """The featurizer an adaptor drives: x [N,3,R,R] -> (summary [N,D] | None, spatial [N,C,R/p,R/p])."""
        summary, spatial, _ = self._featurize(x.to(self.dtype))
        return (summary.float() if self.has_summary else None), spatial.float()

    def forward(self, x: torch.Tensor) -> TeacherOutput:
        """x [B, 3, H, W], normalised for this teacher, H and W multiples of the patch size."""
        if x.shape[-2] % self.patch_size or x.shape[-1] % self.patch_size:
            raise ValueError(
                f"teacher {self.backbone_type}: input {tuple(x.shape[-2:])} is not a multiple of its patch "
                f"size {self.patch_size}"
            )
        with torch.inference_mode():
            if self.adaptor is not None:
                summary, spatial = self.adaptor(x.to(self.device, torch.float32), self._summary_and_spatial)
                logits = None
            else:
                summary, spatial, logits = self._featurize(x.to(self.device, self.dtype))

        def out(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
            # A copy made outside inference mode is an ordinary tensor that autograd may save.
            return None if t is None else t.to(torch.float32, copy=True)

        return TeacherOutput(
            summary=out(summary) if self.has_summary else None,
            spatial=out(spatial),
            logits=out(logits),
        )
