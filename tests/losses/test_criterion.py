"""TeacherCriterion behaviour beyond the golden values: grid matching, valid masks, state, validation."""

import pytest
import torch

from radio.losses.criterion import TeacherCriterion
from radio.losses.spatial import match_grids, resize_grid, resize_mask

SPATIAL_LOSSES = ["L1", "L2", "MSE", "FD", "CS", "BALANCED"]


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_grids_are_matched_to_the_smaller_grid_or_the_configured_size():
    student, teacher = torch.zeros(2, 3, 7, 7), torch.zeros(2, 3, 14, 14)
    p, t, m = match_grids(student, teacher)
    assert p.shape[-2:] == t.shape[-2:] == (7, 7) and m is None
    p, t, _ = match_grids(torch.zeros(2, 3, 16, 16), torch.zeros(2, 3, 8, 12))
    assert p.shape[-2:] == t.shape[-2:] == (8, 12)
    p, t, m = match_grids(student, teacher, torch.ones(2, 14, 14, dtype=torch.bool), target_size=(10, 5))
    assert p.shape[-2:] == t.shape[-2:] == m.shape[-2:] == (10, 5)


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


def test_downsampled_mask_keeps_only_fully_valid_tokens():
    mask = torch.ones(1, 14, 14, dtype=torch.bool)
    mask[:, :, :7] = False  # left half invalid on the teacher's grid
    small = resize_mask(mask, (7, 7))
    # Token column j of the 7-grid averages teacher columns 2j-1..2j+2 (antialiased): columns 0..3 touch
    # the invalid half.
    assert small[0].all(0).tolist() == [False] * 4 + [True] * 3
    assert resize_mask(mask.unsqueeze(1), (14, 14)).equal(mask)


@pytest.mark.parametrize("mode", ["spatial", "combo"])
@pytest.mark.parametrize("loss", SPATIAL_LOSSES)
def test_masked_out_tokens_contribute_nothing(mode, loss):
    b, c, h, w = 2, 6, 5, 5
    pred = torch.randn(b, c, h, w, generator=_gen(1), requires_grad=True)
    target = torch.randn(b, c, h, w, generator=_gen(2))
    mask = torch.rand(b, h, w, generator=_gen(3)) > 0.4
    garbage = target.clone()
    garbage[~mask.unsqueeze(1).expand_as(garbage)] = float("nan")
    summary = {"summary": torch.randn(b, 8, generator=_gen(4))}
    criterion = TeacherCriterion(mode, loss)
    clean = criterion({"spatial": pred, **summary}, {"spatial": target, **summary}, valid_mask=mask)
    dirty = criterion({"spatial": pred, **summary}, {"spatial": garbage, **summary}, valid_mask=mask.unsqueeze(1))
    assert torch.isfinite(dirty["spatial"])
    assert dirty["spatial"].item() == pytest.approx(clean["spatial"].item(), rel=1e-6)
    dirty["spatial"].backward()
    assert torch.isfinite(pred.grad).all()
    assert (pred.grad.permute(0, 2, 3, 1)[~mask] == 0).all()
    assert (pred.grad.permute(0, 2, 3, 1)[mask].abs().sum(-1) > 0).all()


def test_mask_on_the_larger_grid_is_resized_with_the_features():
    pred = torch.randn(1, 4, 7, 7, generator=_gen(5))
    target = torch.randn(1, 4, 14, 14, generator=_gen(6))
    mask = torch.ones(1, 14, 14, dtype=torch.bool)
    mask[:, :, :7] = False
    poisoned = target.clone()
    poisoned[..., :6] = 1e6  # invalid teacher columns that no fully valid 7-grid token reaches
    criterion = TeacherCriterion("spatial", "BALANCED")
    a = criterion({"spatial": pred}, {"spatial": target}, valid_mask=mask)["total"]
    b = criterion({"spatial": pred}, {"spatial": poisoned}, valid_mask=mask)["total"]
    assert a.item() == pytest.approx(b.item(), rel=1e-6)
    unmasked = criterion({"spatial": pred}, {"spatial": poisoned})["total"]
    assert unmasked.item() > 1e3


def test_all_tokens_masked_gives_zero_not_nan():
    pred = torch.randn(2, 3, 4, 4, requires_grad=True)
    out = TeacherCriterion("spatial", "BALANCED")(
        {"spatial": pred}, {"spatial": torch.randn(2, 3, 4, 4)}, valid_mask=torch.zeros(2, 4, 4, dtype=torch.bool)
    )
    assert out["total"].item() == 0.0
    out["total"].backward()
    assert (pred.grad == 0).all()


def test_bf16_predictions_give_float32_losses():
    pred = {"spatial": torch.randn(2, 4, 3, 3).bfloat16(), "summary": torch.randn(2, 8).bfloat16()}
    target = {"spatial": torch.randn(2, 4, 3, 3), "summary": torch.randn(2, 8)}
    out = TeacherCriterion("combo", "BALANCED")(pred, target)
    assert all(v.dtype == torch.float32 for v in out.values())


@pytest.mark.parametrize("kind", ["cosine", "angle", "ce", "tangent_sphere"])
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
