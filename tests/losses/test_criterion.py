"""TeacherCriterion behaviour beyond the golden values: grid matching, modes, state, validation."""

import pytest
import torch

from radio.losses.criterion import TeacherCriterion
from radio.losses.names import LOGITS_ONLY_LOSS_TYPES, LOSS_TYPES, MODE_FEATURES, SUMMARY_LOSS_TYPES
from radio.losses.spatial import match_grids, resize_grid

FEATURE_SHAPES = {"logits": (2, 5), "summary": (2, 8), "spatial": (2, 4, 3, 3)}
# Every resolved mode with every loss type it accepts (KL / CE only compare logits).
MODE_LOSS_PAIRS = [
    (mode, loss)
    for mode in MODE_FEATURES
    for loss in LOSS_TYPES
    if mode == "logits" or loss not in LOGITS_ONLY_LOSS_TYPES
]


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_grids_are_matched_to_the_smaller_grid():
    p, t = match_grids(torch.zeros(2, 3, 7, 7), torch.zeros(2, 3, 14, 14))
    assert p.shape[-2:] == t.shape[-2:] == (7, 7)
    p, t = match_grids(torch.zeros(2, 3, 16, 16), torch.zeros(2, 3, 8, 12))
    assert p.shape[-2:] == t.shape[-2:] == (8, 12)


@pytest.mark.parametrize("mode, loss", MODE_LOSS_PAIRS)
def test_every_resolved_mode_and_loss_type_gives_its_terms(mode, loss):
    pred = {k: torch.randn(*shape, generator=_gen(20), requires_grad=True) for k, shape in FEATURE_SHAPES.items()}
    target = {k: torch.randn(*shape, generator=_gen(21)) for k, shape in FEATURE_SHAPES.items()}
    out = TeacherCriterion(mode, loss)(pred, target)
    assert set(out) == {"total", *MODE_FEATURES[mode]}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in out.values())
    out["total"].backward()
    assert all((pred[k].grad is not None) == (k in MODE_FEATURES[mode]) for k in FEATURE_SHAPES)


def test_downsampling_is_antialiased():
    # Detail on every 4th row/column: plain bilinear at 1/4 scale samples between the spikes and loses
    # them entirely; the antialiased resize averages over each token's footprint and keeps them.
    x = torch.zeros(1, 1, 16, 16)
    x[..., ::4, :] = 1.0
    x[..., :, ::4] = 1.0
    small = resize_grid(x, (4, 4))
    assert (small > 0.2).all()


def test_constant_maps_survive_resizing():
    # Bilinear resizing preserves constants, so the loss between constant maps of different grids is exact.
    student = torch.full((1, 4, 16, 16), 1.5, requires_grad=True)  # the student's grid is the larger one
    teacher = torch.full((1, 4, 7, 7), -0.5)
    out = TeacherCriterion("spatial", "L2")({"spatial": student}, {"spatial": teacher})
    assert out["total"].item() == pytest.approx(4.0, rel=1e-6)
    out["total"].backward()  # through the antialiased downsampling
    # dL/d(resized) = 2·2/(4·49) per element, 4·49 elements; the resize weights sum to 1 per output.
    assert student.grad.sum().item() == pytest.approx(4.0, rel=1e-5)


def test_bf16_predictions_give_float32_losses():
    pred = {"spatial": torch.randn(2, 4, 3, 3).bfloat16(), "summary": torch.randn(2, 8).bfloat16()}
    target = {"spatial": torch.randn(2, 4, 3, 3), "summary": torch.randn(2, 8)}
    out = TeacherCriterion("combo", "BALANCED")(pred, target)
    assert all(v.dtype == torch.float32 for v in out.values())


@pytest.mark.parametrize("kind", SUMMARY_LOSS_TYPES)
def test_summary_gradients_are_finite_at_a_perfect_match(kind):
    target = torch.randn(4, 16, generator=_gen(7))
    pred = torch.nn.functional.layer_norm(target, (16,)).clone().requires_grad_(True)
    out = TeacherCriterion("summary", "CS", summary_loss_type=kind)({"summary": pred}, {"summary": target})
    out["total"].backward()
    assert torch.isfinite(pred.grad).all()
    if kind != "ce":
        assert out["total"].item() == pytest.approx(0.0, abs=1e-3)


def test_angle_state_is_checkpointed_and_frozen_in_eval():
    pred, target = torch.randn(6, 8, generator=_gen(8)), torch.randn(6, 8, generator=_gen(9)) + 2.0
    trained = TeacherCriterion("summary", "CS", summary_loss_type="angle")
    trained({"summary": pred}, {"summary": target})
    state = trained.state_dict()
    assert state["summary_loss.direction_sum"].shape == (8,) and state["summary_loss.count"].item() == 6
    trained.eval()
    before = trained({"summary": pred}, {"summary": target * -1.0})["total"]
    assert trained.summary_loss.count.item() == 6  # eval does not move the statistics
    restored = TeacherCriterion("summary", "CS", summary_loss_type="angle")
    restored.load_state_dict(state)
    restored.eval()
    after = restored({"summary": pred}, {"summary": target * -1.0})["total"]
    assert after.item() == pytest.approx(before.item(), rel=1e-6)
    assert set(restored.log_values()) == {"angular_std"}


def test_invalid_constructions_and_missing_inputs():
    with pytest.raises(ValueError, match="resolved mode"):
        TeacherCriterion("auto", "CS")
    with pytest.raises(ValueError, match="needs mode 'logits'"):
        TeacherCriterion("spatial", "KL")
    criterion = TeacherCriterion("combo", "BALANCED")
    with pytest.raises(KeyError, match="spatial"):
        criterion({"summary": torch.zeros(1, 4)}, {"summary": torch.zeros(1, 4)})
    with pytest.raises(ValueError, match="channels"):
        TeacherCriterion("spatial", "L1")({"spatial": torch.zeros(1, 3, 2, 2)}, {"spatial": torch.zeros(1, 5, 2, 2)})
