"""Named intermediate features of a transformers DETR-family detector, captured with forward hooks, and the
per-level 1x1 projection that brings a student's widths to its teacher's.

A feature name is either an alias of the detector's family (TAO's names where TAO has one) or a raw module
path of the model (``model.encoder.fpn_blocks.0``). Every feature is a list of levels: one tensor per level,
[B, C, H, W] maps or [B, L, C] tokens.

| alias      | RT-DETR family (rt_detr, rt_detr_v2, d_fine)         | Deformable DETR                         |
|------------|------------------------------------------------------|-----------------------------------------|
| backbone   | the backbone's maps (model.backbone)                 | the backbone's maps (model.backbone)    |
| srcs       | each level's input projection before the encoder     | each level's input projection           |
|            | (model.encoder_input_proj.*), strides 8/16/32        | (model.input_proj.*), before the encoder |
| encoder    | the hybrid encoder's output maps (model.encoder)     | encoder tokens [B, ΣHW, d]              |
| dsrcs      | the decoder's input projections of the encoder maps  | —                                       |
|            | (model.decoder_input_proj.*)                         |                                         |
| enc_output | the encoder memory the queries are selected from     | —                                       |
|            | (model.enc_output, [B, ΣHW, d]; the IOU criterion)   |                                         |
"""

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from radio.errors import SpecError

_RTDETR_FEATURES = {
    "backbone": "model.backbone",
    "srcs": "model.encoder_input_proj.*",
    "encoder": "model.encoder",
    "dsrcs": "model.decoder_input_proj.*",
    "enc_output": "model.enc_output",
}
FEATURE_ALIASES = {
    "rt_detr": _RTDETR_FEATURES,
    "rt_detr_v2": _RTDETR_FEATURES,
    "d_fine": _RTDETR_FEATURES,
    "deformable_detr": {"backbone": "model.backbone", "srcs": "model.input_proj.*", "encoder": "model.encoder"},
}


def feature_aliases(model: nn.Module) -> Dict[str, str]:
    """The aliases of ``model``'s family (by ``model.config.model_type``); none for another model."""
    return FEATURE_ALIASES.get(getattr(getattr(model, "config", None), "model_type", None), {})


def feature_modules(model: nn.Module, name: str) -> List[nn.Module]:
    """The modules whose outputs make feature ``name``: one per level for a ``.*`` alias (the children of a
    ModuleList, in level order), else one."""
    path = feature_aliases(model).get(name, name)
    try:
        if path.endswith(".*"):
            return list(model.get_submodule(path[:-2]).children())
        return [model.get_submodule(path)]
    except AttributeError:
        aliases = ", ".join(feature_aliases(model)) or "none for this model"
        raise SpecError(
            f"feature {name!r} is neither an alias of {type(model).__name__} (aliases: {aliases}) nor a module "
            "path of it; a raw path names a submodule as model.named_modules() does, e.g. model.encoder"
        ) from None


def as_levels(output) -> List[torch.Tensor]:
    """A module's output as a list of level tensors: a tensor, a ModelOutput (its ``last_hidden_state``), or a
    list of tensors or of ``(map, mask)`` pairs (transformers' conv encoders)."""
    if isinstance(output, torch.Tensor):
        return [output]
    if hasattr(output, "last_hidden_state"):
        return as_levels(output.last_hidden_state)
    if isinstance(output, (list, tuple)):
        return [item[0] if isinstance(item, (list, tuple)) else item for item in output]
    raise TypeError(f"cannot read feature levels from a {type(output).__name__}")


class FeatureCapture:
    """Forward hooks that keep the named features of a model's latest forward pass.

    ``capture[name]`` is the list of level tensors of feature ``name`` (with their autograd graph: a student's
    features train through the loss). Use as a context manager, or call ``remove()``, to take the hooks off.
    """

    def __init__(self, model: nn.Module, names: Sequence[str]):
        self._levels: Dict[str, List[Optional[List[torch.Tensor]]]] = {}
        self._handles = []
        for name in names:
            modules = feature_modules(model, name)
            self._levels[name] = [None] * len(modules)
            for level, module in enumerate(modules):
                self._handles.append(module.register_forward_hook(self._keeper(name, level)))

    def _keeper(self, name: str, level: int):
        def keep(module, inputs, output):
            self._levels[name][level] = as_levels(output)

        return keep

    def __getitem__(self, name: str) -> List[torch.Tensor]:
        levels = self._levels[name]
        if any(level is None for level in levels):
            raise RuntimeError(f"feature {name!r} was not produced by the last forward pass")
        return [tensor for level in levels for tensor in level]

    @property
    def names(self) -> List[str]:
        return list(self._levels)

    def clear(self) -> None:
        """Drop the kept tensors (and the graph they hold) until the next forward."""
        for name in self._levels:
            self._levels[name] = [None] * len(self._levels[name])

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> "FeatureCapture":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def feature_width(tensor: torch.Tensor) -> int:
    """Channels of a [B, C, H, W] map or a [B, L, C] token tensor."""
    return int(tensor.shape[1] if tensor.dim() == 4 else tensor.shape[-1])


class FeatureProjection(nn.Module):
    """A 1x1 convolution per level from the student's width to the teacher's, identity where they agree.

    Trained with the student, used only by the distillation loss, and not part of the exported detector.
    Applies to [B, C, H, W] maps and to [B, L, C] tokens alike (a 1x1 convolution is a per-token Linear).
    """

    def __init__(self, student_widths: Sequence[int], teacher_widths: Sequence[int]):
        super().__init__()
        if len(student_widths) != len(teacher_widths):
            raise ValueError(f"{len(student_widths)} student levels for {len(teacher_widths)} teacher levels")
        self.levels = nn.ModuleList(
            nn.Conv2d(s, t, kernel_size=1) if s != t else nn.Identity() for s, t in zip(student_widths, teacher_widths)
        )

    def forward(self, maps: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        projected = []
        for level, tensor in zip(self.levels, maps):
            if tensor.dim() == 3 and isinstance(level, nn.Conv2d):
                tensor = level(tensor.transpose(1, 2).unsqueeze(-1)).squeeze(-1).transpose(1, 2)
            else:
                tensor = level(tensor)
            projected.append(tensor)
        return projected


def build_feature_projection(
    student_maps: Sequence[torch.Tensor], teacher_maps: Sequence[torch.Tensor]
) -> Optional[FeatureProjection]:
    """A ``FeatureProjection`` for these captured levels, or None when every width already matches (nothing
    extra to train or to leave out of the export)."""
    student_widths = [feature_width(t) for t in student_maps]
    teacher_widths = [feature_width(t) for t in teacher_maps]
    if student_widths == teacher_widths:
        return None
    return FeatureProjection(student_widths, teacher_widths)


def rtdetr_query_selection(outputs, encoder_memory: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The queries an RT-DETR-family model selected from its encoder, as TAO's IOU criterion reads them:
    ``(queries [B, K, d], scores [B, K], boxes [B, K, 4])``.

    ``encoder_memory`` is the captured ``enc_output`` feature [B, ΣHW, d]; the model picks the K =
    ``num_queries`` locations of highest top-class logit in ``outputs.enc_outputs_class``, which is repeated
    here (the same top-k of the same tensor). ``scores`` are the sigmoid top-class probabilities of
    ``outputs.enc_topk_logits`` and ``boxes`` are ``outputs.enc_topk_bboxes`` (normalised cx,cy,w,h).
    """
    top_logits = outputs.enc_topk_logits
    chosen = torch.topk(outputs.enc_outputs_class.max(-1).values, top_logits.shape[1], dim=1).indices
    queries = encoder_memory.gather(1, chosen.unsqueeze(-1).expand(-1, -1, encoder_memory.shape[-1]))
    return queries, top_logits.sigmoid().max(-1).values, outputs.enc_topk_bboxes
