"""ViTDet windowed attention: the per-step draw, the block layout, and exact window semantics."""

import pytest
import torch
from timm.models.vision_transformer import Block

from radio.config.schema import VitDetConfig
from radio.models.vitdet import choose_window, window_attention_block, windowed_block_mask


def test_choose_window_is_seeded_per_step_and_follows_prob():
    cfg = VitDetConfig(prob=0.3, window_sizes=[4, 8])
    draws = [choose_window(cfg, step, seed=1) for step in range(2000)]
    assert draws == [choose_window(cfg, step, seed=1) for step in range(2000)]  # every rank agrees
    assert draws != [choose_window(cfg, step, seed=2) for step in range(2000)]
    used = [d for d in draws if d is not None]
    assert abs(len(used) / 2000 - 0.3) < 0.04 and set(used) == {4, 8}
    assert all(choose_window(VitDetConfig(prob=0.0), s, 1) is None for s in range(50))


def test_block_mask_spreads_global_blocks_and_keeps_the_last_global():
    assert windowed_block_mask(12, 4, None) == [i not in (2, 5, 8, 11) for i in range(12)]
    assert windowed_block_mask(12, 4, 3) == [i in (0, 1, 3) for i in range(12)]
    assert windowed_block_mask(4, 1, None) == [True, True, True, False]


def _block():
    torch.manual_seed(0)
    return Block(32, 2, qkv_bias=True).eval()


@pytest.mark.parametrize("hw,window", [((4, 6), 6), ((3, 5), 8)])
def test_one_window_covering_the_grid_equals_global_attention(hw, window):
    """Padding positions are masked keys: a single (padded) window must reproduce global attention."""
    block = _block()
    x = torch.randn(2, 3 + hw[0] * hw[1], 32)
    with torch.no_grad():
        assert torch.allclose(window_attention_block(block, x, 3, *hw, window), block(x), atol=1e-5)


def test_windows_do_not_see_each_other():
    block = _block()
    h, w, window = 4, 4, 2
    x = torch.randn(1, 2 + h * w, 32)
    with torch.no_grad():
        base = window_attention_block(block, x, 2, h, w, window)
        y = x.clone()
        y[:, 2 + 0] += torch.randn(32)  # patch (0, 0): top-left window
        moved = window_attention_block(block, y, 2, h, w, window)
    changed = ((moved - base).abs().sum(-1)[0, 2:] > 1e-6).reshape(h, w)
    assert changed[:2, :2].all() and not changed[2:, :].any() and not changed[:, 2:].any()


def test_student_uses_windows_only_when_asked():
    from radio.models.registry import create_model

    model = create_model("c_radio_tiny_patch16").eval()
    model.set_vitdet_layout(num_global=1, num_windowed=None)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "grandma" in name:
                p.fill_(1.0)  # full-strength residual branches, so attention changes are visible
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        glob, win = model(x), model(x, vitdet_window=2)
        big = model(x, vitdet_window=8)  # one window covers the 4x6 grid: same as global
    assert not torch.allclose(glob.spatial, win.spatial, atol=1e-4)
    assert torch.allclose(glob.spatial, big.spatial, atol=1e-5)
