"""``student_final.safetensors``'s tensors: the backbone (unprefixed) and the classifier, never the heads."""

import torch

from radio.engine.outputs import final_state


def test_final_state_keeps_backbone_and_classifier_and_drops_heads():
    trained = {
        "student.blocks.0.norm1.weight": torch.ones(4),
        "classifier.weight": torch.full((3, 4), 2.0),
        "classifier.bias": torch.zeros(3),
        "summary_heads.demo.fc1.weight": torch.ones(2, 4),
        "spatial_heads.demo.weight": torch.ones(2, 4),
    }
    state = final_state(trained)
    assert set(state) == {"blocks.0.norm1.weight", "classifier.weight", "classifier.bias"}
    assert torch.equal(state["classifier.weight"], trained["classifier.weight"])
    assert state["classifier.weight"].data_ptr() != trained["classifier.weight"].data_ptr()  # a copy
