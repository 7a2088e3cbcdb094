"""The DeepSpeed config of a launch: the spec's micro-batch, accumulation, clipping and precision are written
in; a config that disagrees, fp16, or a ZeRO stage other than 2/3 is refused naming both values."""

import json

import pytest

from radio.config.schema import TrainConfig
from radio.engine.deepspeed_config import build_deepspeed_config
from radio.errors import SpecError
from tests.conftest import REPO

SHIPPED = "accelerate_configs/deepspeed_zero{}.json"


@pytest.fixture
def launched(monkeypatch, tmp_path):
    """Point the launch at a DeepSpeed JSON (a shipped one, or one written from a dict)."""

    def use(config):
        path = config if isinstance(config, str) else str(tmp_path / "ds.json")
        if not isinstance(config, str):
            with open(path, "w") as f:
                json.dump(config, f)
        monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", path)

    return use


@pytest.mark.parametrize("stage", [2, 3])
def test_shipped_configs_take_every_value_from_the_spec(launched, stage):
    launched(f"{REPO}/{SHIPPED.format(stage)}")
    config = build_deepspeed_config(
        TrainConfig(grad_accumulation_steps=4, clip_grad_norm=2.5, precision="bf16"), micro_batch=16, world_size=8
    )
    assert config["zero_optimization"]["stage"] == stage
    assert config["train_micro_batch_size_per_gpu"] == 16 and config["gradient_accumulation_steps"] == 4
    assert config["train_batch_size"] == 16 * 4 * 8 and config["gradient_clipping"] == 2.5
    assert config["bf16"]["enabled"] is True


def test_no_clipping_and_fp32_are_written_as_such(launched):
    launched({"zero_optimization": {"stage": 2}})
    config = build_deepspeed_config(TrainConfig(clip_grad_norm=None, precision="fp32"), micro_batch=4, world_size=2)
    assert config["gradient_clipping"] == 0.0 and config["bf16"]["enabled"] is False


@pytest.mark.parametrize(
    "given, expected",
    [
        (
            {"gradient_accumulation_steps": 8},
            "gradient_accumulation_steps=8 disagrees with the spec's train.grad_accumulation_steps=1",
        ),
        (
            {"train_micro_batch_size_per_gpu": 2},
            "train_micro_batch_size_per_gpu=2 disagrees with the spec's dataset.batch_size=4",
        ),
        ({"gradient_clipping": 5.0}, "gradient_clipping=5.0 disagrees with the spec's train.clip_grad_norm=1.0"),
        ({"bf16": {"enabled": True}}, "bf16.enabled=True disagrees with train.precision=fp32"),
        ({"fp16": {"enabled": True}}, "fp16.enabled is set"),
    ],
)
def test_a_config_that_disagrees_with_the_spec_is_refused_naming_both(launched, given, expected):
    launched({"zero_optimization": {"stage": 2}, **given})
    with pytest.raises(SpecError, match="ds.json") as info:
        build_deepspeed_config(TrainConfig(precision="fp32"), micro_batch=4, world_size=2)
    assert expected in str(info.value)


def test_fp16_and_other_stages_are_refused(launched):
    launched({"zero_optimization": {"stage": 2}})
    with pytest.raises(SpecError, match="fp16 is not supported under DeepSpeed"):
        build_deepspeed_config(TrainConfig(precision="fp16"), micro_batch=4, world_size=2)
    launched({"zero_optimization": {"stage": 1}})
    with pytest.raises(SpecError, match="zero_optimization.stage=1; radio supports ZeRO stage 2 or 3"):
        build_deepspeed_config(TrainConfig(precision="bf16"), micro_batch=4, world_size=2)


def test_a_missing_config_file_says_where_paths_are_relative_to(launched, tmp_path):
    launched(str(tmp_path / "nope.json"))
    with pytest.raises(SpecError, match="does not exist .*relative to the directory accelerate launch runs in"):
        build_deepspeed_config(TrainConfig(), micro_batch=4, world_size=2)


def test_launch_flags_without_a_file_are_checked_too(monkeypatch):
    monkeypatch.delenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", raising=False)
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    monkeypatch.setenv("ACCELERATE_GRADIENT_CLIPPING", "3.0")
    with pytest.raises(SpecError, match="gradient_clipping=3.0 disagrees"):
        build_deepspeed_config(TrainConfig(clip_grad_norm=1.0), micro_batch=4, world_size=2)
    monkeypatch.setenv("ACCELERATE_GRADIENT_CLIPPING", "1.0")
    assert build_deepspeed_config(TrainConfig(), micro_batch=4, world_size=2)["zero_optimization"]["stage"] == 3


def test_accumulation_given_to_the_launcher_must_match_the_spec(monkeypatch):
    from radio.engine.accel import build_accelerator

    monkeypatch.setenv("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "4")
    with pytest.raises(SpecError, match="gradient_accumulation_steps=4, the spec says train.grad_accumulation_steps=2"):
        build_accelerator(TrainConfig(grad_accumulation_steps=2, precision="fp32"), micro_batch=4)
