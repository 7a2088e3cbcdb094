"""Single-teacher classification KD: labels from `.cls`, teacher logits, (1 − λ)·CE + λ·KL, heads trained."""

import json

import pytest
import torch
from safetensors.torch import save_file

from radio.data.synthetic import write_synthetic_shards
from radio.engine.loop import run
from radio.models.registry import create_model
from radio.run.spec import load_run_config

SPEC = """
results_dir: {results}
model: {{backbone: {{type: c_radio_tiny_patch16}}}}
dataset:
  num_classes: 10
  img_size: 64
  batch_size: 8
  workers: 0
  train_dataset:
    tar_data_sources: [{{root_dir: {data}, samples_per_file: 50}}]
train:
  max_steps: 3
  precision: fp32
  log_every_n_steps: 1
distill:
  loss_lambda: 0.5
  temperature: 2.0
  teacher:
    model: {{backbone: {{type: demo_vit_tiny_patch16}}}}
    pretrained_teacher_model_path: {weights}
    mode: logits
    loss_type: kl
logging: {{progress_bar: false}}
"""


def write_case(tmp_path, num_classes: int) -> str:
    """Shards with `.cls` labels in [0, 10), a 'trained' teacher with ``num_classes`` logits, and a spec."""
    data = tmp_path / "data"
    write_synthetic_shards(str(data), 100, 50, seed=3, with_cls=True, num_classes=10)
    torch.manual_seed(0)
    teacher = create_model("demo_vit_tiny_patch16", num_classes=num_classes)
    weights = str(tmp_path / "demo_cls_teacher.safetensors")
    save_file({k: v.contiguous() for k, v in teacher.state_dict().items()}, weights)
    spec = tmp_path / "spec.yaml"
    text = SPEC.format(results=tmp_path / "out", data=data, weights=weights)
    spec.write_text(text.replace("num_classes: 10", f"num_classes: {num_classes}"))
    return str(spec)


@pytest.mark.slow
def test_classification_kd_trains_on_labels_and_teacher_logits(tmp_path):
    run(load_run_config(write_case(tmp_path, 10), []))
    with open(tmp_path / "out" / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    for row in rows:
        kd, ce = row["loss/demo_p16"], row["loss/label_ce"]
        assert kd > 0 and ce > 0
        # λ = 0.5 for the single teacher: total = 0.5·CE + 0.5·KL.
        assert row["loss/total"] == pytest.approx(0.5 * ce + 0.5 * kd, rel=1e-5)


@pytest.mark.slow
def test_labels_beyond_num_classes_stop_with_a_clear_message(tmp_path):
    from radio.errors import DataError

    with pytest.raises(DataError, match=r"dataset.num_classes is 3"):
        run(load_run_config(write_case(tmp_path, 3), []))
