"""Teacher-side speed: compiled forwards, fused attention (SDPA), FP8 Linear layers, and how far a switch moves
a teacher's targets.

- ``compile_featurizer``: ``torch.compile`` for fixed shapes, a bounded number of them per teacher.
- ``enable_fused_attention`` / ``attention_report``: every attention module on
  ``F.scaled_dot_product_attention`` where it can be, and a run that shows which ones really call it.
- ``check_fp8_supported`` / ``quantize_fp8``: the transformer blocks' Linear layers in float8 (e4m3 weights
  and dynamically quantised activations, one scale per row) through torchao, refused where there is no FP8.
- ``output_cosines`` / ``switch_cosines``: cosine between a switched teacher's targets and the default ones.
"""

import importlib.util
from typing import Callable, Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from radio.errors import SpecError

# Input shapes (batch, height, width) compiled per teacher; a further shape runs eager (dynamo logs
# "hit config.recompile_limit"). A run needs one per resolution the teacher sees (stochastic_resolutions).
COMPILE_SHAPE_LIMIT = 8
FP8_MIN_CAPABILITY = (8, 9)  # CUDA compute capability with float8 tensor cores (Ada, Hopper, Blackwell)
# Per-row activation scales of an all-zero row (SAM pads its attention windows with zeros) would be 0 and
# quantise to 0/0: the amax is clamped at this floor, which still quantises zeros to zero.
FP8_ACTIVATION_FLOOR = 1e-12


def compile_featurizer(fn: Callable, *, backend: str = "inductor") -> Callable:
    """``fn`` compiled with ``torch.compile`` (default mode), specialised to each input shape (``dynamic=False``).

    Each new (batch, height, width) compiles once; at most ``COMPILE_SHAPE_LIMIT`` shapes per call of this
    function (``isolate_recompiles``: teachers sharing a class do not share the limit), later shapes run eager.
    """
    return torch.compile(
        fn, dynamic=False, backend=backend, recompile_limit=COMPILE_SHAPE_LIMIT, isolate_recompiles=True
    )


def _is_attention(module: nn.Module) -> bool:
    return (
        hasattr(module, "fused_attn")
        or isinstance(module, nn.MultiheadAttention)
        or type(module).__name__.endswith("Attention")
    )


def enable_fused_attention(model: nn.Module) -> List[str]:
    """Switch every attention module with timm's ``fused_attn`` flag to SDPA; -> the names switched (timm
    leaves it off only under ``TIMM_FUSED_ATTN=0`` or for modules it marks experimental)."""
    switched = []
    for name, module in model.named_modules():
        if hasattr(module, "fused_attn") and not module.fused_attn:
            module.fused_attn = True
            switched.append(name)
    return switched


class _CountSDPA(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.scaled_dot_product_attention:
            self.calls += 1
        return func(*args, **(kwargs or {}))


def attention_report(model: nn.Module, run: Callable[[], object]) -> Dict[str, bool]:
    """Run ``run()`` (a forward through ``model``, eager: not a compiled teacher) once -> {attention module
    name: whether every call of it called ``F.scaled_dot_product_attention``}, for each attention module
    that ran (timm attention, ``nn.MultiheadAttention``, classes named ``*Attention``)."""
    counter = _CountSDPA()
    report: Dict[str, bool] = {}

    def watch(name: str, module: nn.Module) -> List:
        calls_before: List[int] = []

        def before(mod, args) -> None:
            calls_before.append(counter.calls)

        def after(mod, args, output) -> None:
            report[name] = report.get(name, True) and counter.calls > calls_before.pop()

        return [module.register_forward_pre_hook(before), module.register_forward_hook(after)]

    handles = [h for name, module in model.named_modules() if _is_attention(module) for h in watch(name, module)]
    try:
        with counter:
            run()
    finally:
        for handle in handles:
            handle.remove()
    return report


def fp8_unavailable(device: torch.device) -> Optional[str]:
    """Why FP8 teachers cannot run on ``device`` here (None: they can)."""
    missing = []
    if device.type != "cuda" or not torch.cuda.is_available():
        missing.append(f"the teachers run on {device.type}" if device.type != "cuda" else "no CUDA GPU is visible")
    else:
        capability = torch.cuda.get_device_capability(device)
        if capability < FP8_MIN_CAPABILITY:
            missing.append(
                f"{torch.cuda.get_device_name(device)} has compute capability {capability[0]}.{capability[1]}"
            )
    if importlib.util.find_spec("torchao") is None:
        missing.append("torchao is not installed (pip install torchao)")
    return "; ".join(missing) or None


def check_fp8_supported(device: torch.device, dtype: torch.dtype) -> None:
    """Raise ``SpecError`` naming ``distill.teacher_fp8`` unless FP8 teachers can run on ``device``."""
    reason = fp8_unavailable(torch.device(device))
    if reason is None and dtype != torch.bfloat16:
        reason = f"the teacher runs in {str(dtype).replace('torch.', '')}, and FP8 weights are quantised from bf16"
    if reason:
        raise SpecError(
            "distill.teacher_fp8 (or distill.teacher[i].teacher_fp8) is true, but FP8 teachers need a CUDA GPU "
            f"with float8 tensor cores (compute capability >= {FP8_MIN_CAPABILITY[0]}.{FP8_MIN_CAPABILITY[1]}: "
            "L4/L40, H100/H200, B200), torchao and bf16 teachers; here " + reason + ". Set it to false to run the "
            "teachers in bf16."
        )


def _fp8_layer(module: nn.Module, name: str) -> bool:
    """A Linear of a transformer block (a ``blocks`` path segment: qkv, proj, fc1, fc2 — nearly all of a
    ViT's FLOPs) whose widths suit ``torch._scaled_mm`` (multiples of 16) and whose weight has no all-zero
    row (a zero per-row scale). Patch embeddings, heads and pooling stay bf16."""
    if not isinstance(module, nn.Linear) or "blocks" not in name.split("."):
        return False
    out_dim, in_dim = module.weight.shape
    return in_dim % 16 == 0 and out_dim % 16 == 0 and bool(module.weight.detach().abs().amax(dim=1).min() > 0)


def quantize_fp8(model: nn.Module) -> List[str]:
    """Quantise ``model``'s block Linears (bf16) in place with torchao's float8 dynamic-activation,
    float8-weight inference config (e4m3, per-row scales); -> the layers quantised. torchao itself refuses
    hardware without FP8 (``check_fp8_supported`` says so first, with the spec field)."""
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    chosen = [name for name, module in model.named_modules() if _fp8_layer(module, name)]
    config = Float8DynamicActivationFloat8WeightConfig(
        granularity=PerRow(), activation_value_lb=FP8_ACTIVATION_FLOOR, set_inductor_config=False
    )
    quantize_(model, config, filter_fn=lambda module, name: name in chosen)
    return chosen


def _cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine over dim 1 of two [N, C, ...] tensors, in float64 -> [N, ...] flattened."""
    return F.cosine_similarity(a.double(), b.double(), dim=1).flatten()


def output_cosines(reference, other) -> Dict[str, float]:
    """Two ``TeacherOutput`` of one teacher on one batch -> ``summary_min`` / ``summary_mean`` (per sample,
    [B, Ds]) and ``spatial_min`` / ``spatial_mean`` (per token over channels, [B, C, h, w]); no summary
    entries for a teacher without one."""
    out = {}
    for kind in ("summary", "spatial"):
        a, b = getattr(reference, kind), getattr(other, kind)
        if a is not None:
            cos = _cosines(a, b)
            out[f"{kind}_min"], out[f"{kind}_mean"] = cos.min().item(), cos.mean().item()
    return out


def switch_cosines(reference: Dict[str, object], switched: Dict[str, object]) -> Dict[str, Dict[str, float]]:
    """{teacher: ``output_cosines``} between each teacher's outputs under a switch and under the default path
    (e.g. two ``radio.run.build.teacher_outputs`` results on the same images and sizes)."""
    return {name: output_cosines(reference[name], switched[name]) for name in reference}
