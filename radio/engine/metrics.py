"""Where numbers go: ``metrics.jsonl`` always, TensorBoard and W&B when enabled. Main rank only."""
import json
import math
import os
from typing import Dict, Optional

from radio.config.schema import LoggingConfig


class MetricsLogger:
    def __init__(self, results_dir: str, cfg: LoggingConfig, *, enabled: bool, run_config: Optional[dict] = None):
        self.enabled = enabled
        self._jsonl = None
        self._tb = None
        self._wandb = None
        if not enabled:
            return
        os.makedirs(results_dir, exist_ok=True)
        # Append: a resumed run continues the same file.
        self._jsonl = open(os.path.join(results_dir, "metrics.jsonl"), "a", buffering=1)
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(os.path.join(results_dir, "tensorboard"))
        if cfg.wandb.enable:
            import wandb

            self._wandb = wandb.init(
                project=cfg.wandb.project,
                entity=cfg.wandb.entity,
                name=cfg.wandb.name,
                mode=cfg.wandb.mode,
                tags=list(cfg.wandb.tags),
                dir=results_dir,
                config=run_config,
                resume="allow",
            )

    def log(self, step: int, values: Dict[str, float]) -> None:
        if not self.enabled:
            return
        clean = {k: (float(v) if math.isfinite(float(v)) else None) for k, v in values.items()}
        self._jsonl.write(json.dumps({"step": step, **clean}) + "\n")
        if self._tb is not None:
            for key, value in clean.items():
                if value is not None:
                    self._tb.add_scalar(key, value, step)
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in clean.items() if v is not None}, step=step)

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def read_metrics(results_dir: str) -> list:
    path = os.path.join(results_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
