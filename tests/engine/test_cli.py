"""The real CLI in subprocesses: end-to-end runs, --print-config, and user errors without tracebacks."""

import json
import os
import subprocess

import pytest
import torch
from safetensors.torch import load_file

from radio.cli import main as radio_main
from tests.conftest import REPO, radio_cli as radio, tiny_run_overrides
from tests.engine.launchers import cpu_launch_command

QUICKSTART_SPEC = os.path.join(REPO, "specs", "quickstart.yaml")
SEED_SPEC = os.path.join(REPO, "specs", "radio_multiteacher.yaml")


def metrics_rows(results_dir):
    with open(os.path.join(results_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.mark.slow
def test_distill_runs_end_to_end(demo_assets, tmp_path):
    results = str(tmp_path / "run")
    proc = radio("distill", "-e", QUICKSTART_SPEC, *tiny_run_overrides(demo_assets, results))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = metrics_rows(results)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for row in rows:
        assert row["loss/demo_a"] > 0 and row["loss/demo_b"] > 0
        assert abs(sum(v for k, v in row.items() if k.startswith("mixture/")) - 1.0) < 1e-6
    assert os.path.isdir(os.path.join(results, "checkpoints", "step_0000004"))
    # No progress bar: one plain line per logging window, from the run's own values.
    lines = [line for line in proc.stdout.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in lines] == ["1/4", "2/4", "3/4", "4/4"]
    assert f"loss {rows[-1]['loss/total']:.4f} (demo_a " in lines[-1] and "img/s | lr " in lines[-1]
    assert "ETA 0s" in lines[-1]
    state = load_file(os.path.join(results, "student_final.safetensors"))
    assert any(k.startswith("blocks.") for k in state)
    with open(os.path.join(results, "config.yaml")) as f:
        assert "resolved_teachers" in f.read()


@pytest.mark.slow
def test_accelerate_launch_runs_the_same_loop(demo_assets, tmp_path):
    results = str(tmp_path / "acc")
    cmd = cpu_launch_command(1, tiny_run_overrides(demo_assets, results, "train.max_steps=2"))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["step"] for r in metrics_rows(results)] == [1, 2]
    assert os.path.exists(os.path.join(results, "student_final.safetensors"))


@pytest.mark.slow
def test_print_config_shows_each_teachers_effective_settings():
    proc = radio("distill", "-e", SEED_SPEC, "--print-config")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    teachers = out.split("resolved_teachers:")[1].split("  - name: ")[1:]
    assert len(teachers) == 2
    first, second = teachers
    assert "mode: spatial" in first and "input_size: 432" in first
    assert "loss_type: BALANCED" in first and "loss_lambda: 0.5" in first
    assert "norm_mean: [0.485, 0.456, 0.406]" in first
    assert "mode: summary" in second and "loss_type: BALANCED" in second and "loss_lambda: 0.5" in second
    assert "norm_mean: [0.5, 0.5, 0.5]" in second and "norm_std: [0.5, 0.5, 0.5]" in second


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["distill.teachr=[]"], "distill.teachr"),
        (["dataset.batch_size=abc"], "dataset.batch_size"),
        (["distill.loss_type=FOO"], "distill.loss_type"),
        (["distill.teacher.0.pretrained_teacher_model_path=/nonexistent/t.safetensors"], "/nonexistent/t.safetensors"),
    ],
)
@pytest.mark.slow
def test_user_errors_exit_nonzero_with_one_message(demo_assets, tmp_path, extra, expected):
    proc = radio("distill", "-e", QUICKSTART_SPEC, *tiny_run_overrides(demo_assets, str(tmp_path / "r")), *extra)
    assert proc.returncode == 2
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not os.path.exists(tmp_path / "r" / "checkpoints")


@pytest.mark.slow
def test_teacher_weights_of_another_architecture_are_refused(demo_assets, tmp_path):
    from radio.quickstart import demo_weights_path

    other = demo_weights_path(demo_assets, "demo_vit_tiny_patch14")
    proc = radio(
        "distill",
        "-e",
        QUICKSTART_SPEC,
        *tiny_run_overrides(demo_assets, str(tmp_path / "r")),
        f"distill.teacher.0.pretrained_teacher_model_path={other}",
    )
    assert proc.returncode == 2
    assert other in proc.stderr and "another architecture" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_results_dir_that_is_a_file_is_refused(demo_assets, tmp_path):
    file = tmp_path / "results.txt"
    file.write_text("keep me")
    proc = radio("distill", "-e", QUICKSTART_SPEC, *tiny_run_overrides(demo_assets, str(file)))
    assert proc.returncode == 2 and "is a file" in proc.stderr and "Traceback" not in proc.stderr
    assert file.read_text() == "keep me"


@pytest.mark.slow
def test_empty_root_dir_is_refused(demo_assets, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = radio(
        "distill",
        "-e",
        QUICKSTART_SPEC,
        *tiny_run_overrides(demo_assets, str(tmp_path / "r")),
        f"dataset.train_dataset.tar_data_sources.1.root_dir={empty}",
    )
    assert proc.returncode == 2
    assert "tar_data_sources[1].root_dir" in proc.stderr and str(empty) in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "content, name, expected",
    [
        (
            lambda p: torch.save({"w": torch.zeros(2)}, p),
            "t.safetensors",
            "named .safetensors but holds a torch.save file",
        ),
        (lambda p: open(p, "wb").write(b"\x80" + bytes(range(256)) * 4), "t.pt", "corrupt PyTorch checkpoint"),
        (lambda p: open(p, "wb").write(bytes(range(256)) * 4), "t.safetensors", "not a readable checkpoint"),
    ],
)
def test_unusable_teacher_files_are_named_without_a_traceback(demo_assets, tmp_path, capsys, content, name, expected):
    path = str(tmp_path / name)
    content(path)
    overrides = [
        *tiny_run_overrides(demo_assets, str(tmp_path / "r")),
        f"distill.teacher.0.pretrained_teacher_model_path={path}",
    ]
    assert radio_main(["distill", "-e", QUICKSTART_SPEC, *overrides]) == 2  # in-process: a traceback would fail
    err = capsys.readouterr().err
    assert path in err and expected in err, err[-2000:]


def test_print_config_says_which_files_a_run_would_stop_on(demo_assets, tmp_path, capsys):
    overrides = [
        *tiny_run_overrides(demo_assets, str(tmp_path / "r")),
        "dataset.train_dataset.data_weight_mode=inv_frequency",
    ]
    assert radio_main(["distill", "-e", QUICKSTART_SPEC, "--print-config", *overrides]) == 0
    out = capsys.readouterr().out
    assert "# files: a run would stop here: " in out and "needs de-duplication counts" in out


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["distill.teacher.0.pretrained_teacher_model_path=/proc/self/mem"], "/proc/self/mem' cannot be read"),
        (["distill.teacher.0.pretrained_teacher_model_path=/tmp"], "'/tmp' is a folder; give the checkpoint file"),
        (["dataset.train_dataset.data_weight_mode=inv_frequency"], "needs de-duplication counts"),
    ],
)
def test_cheap_checks_stop_the_run_before_any_model_is_built(
    demo_assets, tmp_path, capsys, monkeypatch, extra, expected
):
    import radio.engine.loop as loop

    def no_models(*args, **kwargs):
        raise AssertionError("models were built before the check")

    monkeypatch.setattr(loop, "build_components", no_models)
    overrides = [*tiny_run_overrides(demo_assets, str(tmp_path / "r")), *extra]
    assert radio_main(["distill", "-e", QUICKSTART_SPEC, *overrides]) == 2
    assert expected in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["distill", "-e", "S", "--print-config", "a=1", "b=2"],
        ["distill", "-e", "S", "a=1", "--print-config", "b=2"],
        ["distill", "a=1", "-e", "S", "b=2", "--print-config"],
        ["distill", "--print-config", "a=1", "b=2", "-e", "S"],
        ["distill", "a=1", "b=2", "--print-config", "-e", "S"],
    ],
)
def test_options_and_overrides_mix_in_any_order(argv):
    from radio.cli import build_parser

    args = build_parser().parse_args(argv)
    assert (args.spec, args.print_config, args.overrides) == ("S", True, ["a=1", "b=2"])


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["data", "preview", "a=1", "-e", "S", "--steps", "3", "b=2"], {"spec": "S", "steps": 3}),
        (["eval", "--results", "R", "a=1", "--knn-train", "T", "b=2"], {"results": "R", "knn_train": "T"}),
        (["quickstart", "a=1", "--fresh", "b=2", "--out", "O"], {"out": "O", "fresh": True}),
    ],
)
def test_every_command_with_overrides_takes_them_anywhere(argv, expected):
    from radio.cli import build_parser

    args = vars(build_parser().parse_args(argv))
    assert args["overrides"] == ["a=1", "b=2"] and expected.items() <= args.items()


def test_train_py_takes_overrides_anywhere():
    from radio.train import build_parser

    args = build_parser().parse_args(["a=1", "--spec", "S", "b=2"])
    assert (args.spec, args.overrides) == ("S", ["a=1", "b=2"])


def test_a_missing_spec_is_still_refused(capsys):
    with pytest.raises(SystemExit):
        radio_main(["distill", "--print-config", "a=1"])
    assert "-e/--spec/--experiment_spec" in capsys.readouterr().err


def test_print_config_between_overrides(demo_assets, tmp_path, capsys):
    overrides = tiny_run_overrides(demo_assets, str(tmp_path / "r"), "train.optim.lr=0.0123")
    assert radio_main(["distill", "-e", QUICKSTART_SPEC, *overrides[:2], "--print-config", *overrides[2:]]) == 0
    assert "lr: 0.0123" in capsys.readouterr().out


def test_a_stopped_quickstart_exits_75_without_the_finished_summary(tmp_path, capsys, monkeypatch):
    import radio.engine.loop as loop
    from radio.engine.stop import EXIT_STOPPED

    stopped = loop.RunResult(str(tmp_path / "results"), steps=3, stopped_early=True, teacher_names=["demo_a"])
    monkeypatch.setattr(loop, "run", lambda cfg: stopped)  # as after a STOP file or SIGTERM mid-run
    assert radio_main(["quickstart", "--out", str(tmp_path), f"results_dir={tmp_path / 'results'}"]) == EXIT_STOPPED
    out = capsys.readouterr().out
    assert "per-teacher distillation loss" not in out and "evaluate: radio eval" not in out


def test_print_config_teachers_read_back_as_yaml_equal_to_the_resolved_teachers(demo_assets, tmp_path, capsys):
    import yaml

    from radio.run.spec import load_run_config
    from radio.run.teachers import resolve_teachers

    overrides = tiny_run_overrides(demo_assets, str(tmp_path / "r"))
    assert radio_main(["distill", "-e", QUICKSTART_SPEC, "--print-config", *overrides]) == 0
    printed = yaml.safe_load(capsys.readouterr().out.split("# effective settings per teacher")[1])
    expected = [t.as_dict() for t in resolve_teachers(load_run_config(QUICKSTART_SPEC, overrides))]
    assert printed["resolved_teachers"] == yaml.safe_load(yaml.safe_dump(expected))  # null/true, not None/True
