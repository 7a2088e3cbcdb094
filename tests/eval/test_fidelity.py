"""Teacher fidelity: 1 for a student that reproduces its teachers, lower for the (barely trained) real one."""

import pytest
import torch

from radio.eval.evaluate import StudentView, fidelity_teachers
from radio.eval.fidelity import adapted_features, measure_fidelity, spatial_cosine, summary_cosine
from radio.eval.images import iter_image_batches
from radio.export.trained_run import load_trained_run
from radio.run.build import teacher_outputs


def test_cosines_are_one_for_equal_features_and_near_zero_for_unrelated_ones():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 64, generator=g)
    assert torch.allclose(summary_cosine(x, x), torch.ones(4))
    # The summary is compared after a non-affine LayerNorm: a positive scale and a shift do not matter.
    assert torch.allclose(summary_cosine(3 * x + 5, x), torch.ones(4), atol=1e-5)
    assert summary_cosine(torch.randn(4, 64, generator=g), x).abs().max() < 0.5

    fmap = torch.randn(2, 16, 8, 8, generator=g)
    assert torch.allclose(spatial_cosine(fmap, fmap), torch.ones(2))
    assert spatial_cosine(-fmap, fmap).max() < -0.99
    # Different grids are compared on the smaller one (no shape error): the same vector at every token of
    # a 4x4 and an 8x8 grid is a perfect match.
    vectors = torch.randn(2, 16, 1, 1, generator=g)
    assert torch.allclose(spatial_cosine(vectors.expand(-1, -1, 4, 4), vectors.expand(-1, -1, 8, 8)), torch.ones(2))


@pytest.fixture(scope="module")
def fidelity_setup(trained_results, demo_assets):
    run = load_trained_run(trained_results)
    teachers = fidelity_teachers(run, torch.device("cpu"))
    size = max([run.cfg.dataset.img_size] + [t.input_size for t in run.teachers])
    images = [b for b, _ in iter_image_batches(f"{demo_assets}/data/source_b", size, 8, max_images=16)]
    return run, teachers, images


@pytest.mark.slow
def test_perfect_student_scores_one_and_the_trained_one_scores_lower(fidelity_setup):
    run, teachers, images = fidelity_setup

    def targets(batch):
        return teacher_outputs(teachers, run.teachers, batch)

    def perfect(batch):  # a student whose adapted features are exactly the teachers' (the kinds it learns)
        outs = targets(batch)
        return {
            t.name: {
                kind: getattr(outs[t.name], kind)
                for kind, used in (("summary", t.uses_summary), ("spatial", t.uses_spatial))
                if used
            }
            for t in run.teachers
        }

    view = StudentView(run, torch.device("cpu"))
    ideal = measure_fidelity(images, perfect, targets)
    real = measure_fidelity(images, lambda batch: adapted_features(run, view(batch)), targets)

    assert set(ideal) == set(real) == {"demo_a", "demo_b"}
    assert set(real["demo_a"]) == {"summary", "spatial", "images"} and set(real["demo_b"]) == {"spatial", "images"}
    assert real["demo_a"]["images"] == 16
    for name, scores in ideal.items():
        assert set(scores) == set(real[name])
        for kind in set(scores) - {"images"}:
            assert scores[kind] == pytest.approx(1.0, abs=1e-4)
            assert real[name][kind] < 0.9  # a 4-step student is far from its teachers
