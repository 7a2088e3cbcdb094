"""Random-weight FeatSharp checkpoints in the released layout (NVlabs/FeatSharp ``train.py``), for tests."""

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from radio.models.featsharp.checkpoint import GROUPS, SN, build_adaptor, parse_upsample_args

DEFAULT_TYPE = "featsharp.no-ln.inputs-jafar-tiles"


def _random_like(key: str, t: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    noise = torch.randn(t.shape, generator=gen)
    if t.ndim >= 2:
        return noise * 0.5 / t[0].numel() ** 0.5
    if key.endswith("sigma_spatial"):
        return 1 + 0.1 * noise
    if key.endswith("freqs"):
        return 3 * noise
    base = 1.0 if key.endswith((".weight", "gamma")) and t.ndim == 1 else 0.0
    return base + 0.1 * noise


def _phi_s(dim: int, gen: torch.Generator) -> dict:
    rotation, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen))
    return {
        "mean": torch.randn(dim, generator=gen),
        "alpha": torch.tensor(0.5),
        "rotation": rotation,
        "inv_rotation": rotation.t().contiguous(),
    }


def to_spectral(state: dict, module: nn.Module, gen: torch.Generator) -> dict:
    """Plain ``<linear>.weight`` -> FeatSharp's spectral-reparametrisation keys (random u, v, sn_scale)."""
    out = dict(state)
    for name, lin in module.named_modules():
        if not isinstance(lin, nn.Linear):
            continue
        weight = out.pop(f"{name}.weight")
        out[f"{name}{SN}original"] = weight
        n = 3 if name.endswith("attn.qkv") else 2 if name.endswith("mlp.w12") else 1
        prefixes = [f"{name}{SN}0."] if n == 1 else [f"{name}{SN}0.parts.{i}." for i in range(n)]
        for pre, part in zip(prefixes, weight.chunk(n)):
            out[pre + "_u"] = F.normalize(torch.randn(part.shape[0], generator=gen), dim=0)
            out[pre + "_v"] = F.normalize(torch.randn(part.shape[1], generator=gen), dim=0)
            out[pre + "sn_scale"] = 0.3 * torch.randn(1, 1, generator=gen)
            out[pre + "_sn_version"] = torch.tensor(2)
    return out


def write_featsharp_checkpoint(
    path: str,
    *,
    embed_dim: int,
    patch_size: int,
    input_size: int,
    upsampler_type: str = DEFAULT_TYPE,
    factor: int = 2,
    normalizer: str = "phi-s",
    spectral: bool = True,
    bias_buffer: bool = True,
    cond_bias: bool = False,
    ddp: bool = False,
    seed: int = 0,
    grid: Optional[int] = None,
) -> dict:
    """Write (torch.save) and return a FeatSharp training checkpoint with random weights.

    ``model_state`` holds ``upsampler.*`` (spectral-reparametrised when ``spectral``), ``normalizer.*`` (PHI-S
    buffers), ``bias_buffer.buffer``, optional ``cond_bias_transform.*`` and trainer-only keys (downsampler,
    scale_net); ``ddp`` puts ``module.`` after the trained modules' prefixes. ``grid`` overrides the bias
    buffer's grid (default input_size // patch_size).
    """
    gen = torch.Generator().manual_seed(seed)
    args = {"type": upsampler_type, "factor": factor, "normalizer": normalizer}
    spec = parse_upsample_args(args, path)
    adaptor = build_adaptor(
        spec,
        embed_dim=embed_dim,
        patch_size=patch_size,
        input_size=grid * patch_size if grid else input_size,
        bias=bias_buffer,
        cond_bias=cond_bias,
        upsample=True,
    )
    model_state = {}
    for group in GROUPS:
        module = getattr(adaptor, group)
        if module is None:
            continue
        state = {k: _random_like(k, v, gen) for k, v in module.state_dict().items()}
        if group == "normalizer" and state:
            state = _phi_s(embed_dim, gen)
        if spectral and group in ("upsampler", "cond_bias_transform"):
            state = to_spectral(state, module, gen)
        inner = "module." if ddp and group != "normalizer" else ""
        model_state.update({f"{group}.{inner}{k}": v for k, v in state.items()})
    model_state["downsampler.attn_kernel.weight"] = torch.randn(1, 9, 9, generator=gen)
    model_state["scale_net.net.0.weight"] = torch.randn(8, embed_dim, 3, 3, generator=gen)
    chk = {
        "model_state": model_state,
        "grad_scaler_state": {"scale": 65536.0, "growth_factor": 2.0},
        "lr_sched_state": {"last_epoch": 10, "base_lrs": [5e-4]},
        "optim_state": {"state": {0: {"exp_avg": torch.zeros(3)}}, "param_groups": [{"lr": 5e-4, "params": [0]}]},
        "global_step": 10,
        "upsample_args": args,
        "train_config": {"upsampler_type": upsampler_type, "upsample_factor": factor, "input_size": input_size},
    }
    torch.save(chk, path)
    return chk
