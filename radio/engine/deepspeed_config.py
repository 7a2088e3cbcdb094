"""The DeepSpeed config of a ZeRO launch, with the spec as the single source of truth.

``accelerate launch`` with a DeepSpeed config (``accelerate_configs/deepspeed_zero*.yaml`` and the JSON
they name, or ``--use_deepspeed --zero_stage N``) hands the engine a DeepSpeed config through environment
variables. The values the spec also defines — micro-batch, gradient accumulation, clipping, precision —
are written into that config from the spec; a config that sets one of them to something else is refused
with both values named, so a run never trains with settings its spec does not show.
"""

import json
import os
from typing import Any, Dict

from radio.config.schema import TrainConfig
from radio.errors import SpecError

DS_CONFIG_ENV = "ACCELERATE_DEEPSPEED_CONFIG_FILE"


def deepspeed_requested() -> bool:
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def build_deepspeed_config(train: TrainConfig, micro_batch: int, world_size: int) -> Dict[str, Any]:
    """The launch's DeepSpeed config with the spec's values written in.

    micro_batch: ``dataset.batch_size`` (per rank). Raises ``SpecError`` for fp16, a stage other than 2 or
    3, or a config value that disagrees with the spec.
    """
    if train.precision == "fp16":
        raise SpecError(
            "train.precision=fp16 is not supported under DeepSpeed (its loss scaling would skip steps the spec "
            "cannot see); use bf16 (GPUs) or fp32."
        )
    config, source = _launch_config()
    stage = config.get("zero_optimization", {}).get("stage")
    if stage not in (2, 3):
        raise SpecError(
            f"{source}: zero_optimization.stage={stage!r}; radio supports ZeRO stage 2 or 3 "
            "(accelerate_configs/deepspeed_zero2.yaml, deepspeed_zero3.yaml)."
        )
    if config.get("fp16", {}).get("enabled") not in (None, False, "auto"):
        raise SpecError(f"{source}: fp16.enabled is set; radio trains in bf16 or fp32 under DeepSpeed.")
    accum = train.grad_accumulation_steps
    from_spec = {
        "train_micro_batch_size_per_gpu": (micro_batch, "dataset.batch_size"),
        "gradient_accumulation_steps": (accum, "train.grad_accumulation_steps"),
        "train_batch_size": (micro_batch * accum * world_size, "dataset.batch_size x grad_accumulation_steps x ranks"),
        # DeepSpeed clips inside its own step; 0 turns clipping off.
        "gradient_clipping": (float(train.clip_grad_norm or 0.0), "train.clip_grad_norm"),
    }
    for key, (value, field) in from_spec.items():
        given = config.get(key, "auto")
        if given != "auto" and float(given) != float(value):
            raise SpecError(
                f'{source}: {key}={given} disagrees with the spec\'s {field}={value}; set it to "auto" (radio '
                "fills it from the spec) or change the spec."
            )
        config[key] = value
    bf16, wanted = config.get("bf16", {}).get("enabled", "auto"), train.precision == "bf16"
    if bf16 != "auto" and bool(bf16) != wanted:
        raise SpecError(
            f"{source}: bf16.enabled={bf16} disagrees with train.precision={train.precision}; set it to "
            '"auto" or change train.precision.'
        )
    config["bf16"] = {**config.get("bf16", {}), "enabled": wanted}
    config.pop("fp16", None)
    config["steps_per_print"] = 1 << 62  # DeepSpeed's own progress lines would interleave with ours
    return config


def _launch_config():
    """(config dict, where it came from) for this launch."""
    path = os.environ.get(DS_CONFIG_ENV, "none")
    if path != "none":
        if not os.path.isfile(path):
            raise SpecError(
                f"the accelerate config names deepspeed_config_file={path!r}, which does not exist (paths are "
                "relative to the directory accelerate launch runs in; launch from the repository root or use an "
                "absolute path)."
            )
        try:
            with open(path) as f:
                return json.load(f), path
        except (OSError, ValueError) as exc:
            raise SpecError(f"cannot read the DeepSpeed config {path!r}: {exc}") from None
    # `accelerate launch --use_deepspeed --zero_stage N ...` without a file: its flags arrive as variables.
    env = os.environ
    config: Dict[str, Any] = {
        "zero_optimization": {
            "stage": int(env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")),
            "offload_optimizer": {"device": env.get("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", "none")},
            "offload_param": {"device": env.get("ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE", "none")},
        }
    }
    for key, var in (
        ("gradient_accumulation_steps", "ACCELERATE_GRADIENT_ACCUMULATION_STEPS"),
        ("gradient_clipping", "ACCELERATE_GRADIENT_CLIPPING"),
    ):
        if env.get(var, "auto") not in ("auto", "none", ""):
            config[key] = float(env[var])
    return config, "the accelerate launch flags"
