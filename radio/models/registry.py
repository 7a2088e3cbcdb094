"""Backbone registry: ``name -> constructor`` for students and teachers, timm style.

Each entry carries a ``ModelInfo`` so configs can be validated (patch size, which features a teacher
yields) without building the network. ``timm/<name>`` reaches any timm model.
"""

import difflib
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch.nn as nn


@dataclass(frozen=True)
class ModelInfo:
    name: str
    embed_dim: int  # channels of the spatial tokens
    summary_dim: int  # length of the summary vector (0: none)
    patch_size: int
    img_size: int  # native / default input resolution
    num_prefix_tokens: int  # CLS + register tokens ahead of the patch tokens
    depth: int
    num_heads: int
    is_student: bool = False  # usable as the trained student (C-RADIO layout)
    summary_proj: bool = False  # the summary passes through the model's ``head`` (a projection, e.g. CLIP's)
    # The input normalisation the weights were trained with ((mean, std) per channel, 0-1 scale); a
    # teacher without ``norm_mean``/``norm_std`` of its own uses it (None: the dataset's).
    norm: Optional[Tuple[Tuple[float, ...], Tuple[float, ...]]] = None
    # A teacher's default name (metric keys, heads, views: ``loss/dinov2_l``), unique over the registry;
    # None only for ``timm/<name>`` types, which are named from the timm name (radio/run/teachers.py).
    short_name: Optional[str] = None

    @property
    def has_summary(self) -> bool:
        """Every entry yields a spatial map (patch tokens); a summary only when ``summary_dim`` > 0."""
        return self.summary_dim > 0


_CONSTRUCTORS: Dict[str, Callable[..., nn.Module]] = {}
_INFOS: Dict[str, ModelInfo] = {}
_SHORT_NAMES: Dict[str, str] = {}  # short name -> registry name


class UnknownModelError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return self.args[0]


def register_model(info: ModelInfo) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: ``@register_model(ModelInfo(name=..., ...))`` over ``def build(**kwargs) -> nn.Module``."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if info.name in _CONSTRUCTORS:
            raise ValueError(f"model {info.name!r} registered twice")
        if not info.short_name:
            raise ValueError(f"model {info.name!r} has no short_name (the default name of a teacher of this type)")
        if info.short_name in _SHORT_NAMES:
            raise ValueError(
                f"models {_SHORT_NAMES[info.short_name]!r} and {info.name!r} share short_name {info.short_name!r}"
            )
        _CONSTRUCTORS[info.name] = fn
        _SHORT_NAMES[info.short_name] = info.name
        _INFOS[info.name] = info
        return fn

    return wrap


def _ensure_entries_loaded() -> None:
    # Entry modules register themselves on import; importing here keeps the registry complete whichever
    # module a caller imported first.
    from radio.models import entries  # noqa: F401


def list_models(pattern: str = "*") -> List[str]:
    import fnmatch

    _ensure_entries_loaded()
    return sorted(n for n in _CONSTRUCTORS if fnmatch.fnmatch(n, pattern))


def _unknown(name: str) -> UnknownModelError:
    close = difflib.get_close_matches(name, list(_CONSTRUCTORS), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return UnknownModelError(
        f"unknown model type {name!r}.{hint} Run `radio models` for the list, or use `timm/<timm model name>`."
    )


def get_model_info(name: str) -> ModelInfo:
    _ensure_entries_loaded()
    if name in _INFOS:
        return _INFOS[name]
    if name.startswith("timm/"):
        from radio.models.entries import timm_model_info

        return timm_model_info(name)
    raise _unknown(name)


def create_model(name: str, **kwargs) -> nn.Module:
    _ensure_entries_loaded()
    if name in _CONSTRUCTORS:
        return _CONSTRUCTORS[name](**kwargs)
    if name.startswith("timm/"):
        from radio.models.entries import create_timm_model

        return create_timm_model(name, **kwargs)
    raise _unknown(name)
