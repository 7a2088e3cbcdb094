"""Mistyped command lines are answered with the command's own usage (radio/arguments.py)."""

import pytest

from radio.cli import build_parser


def parse_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_an_override_written_as_an_option_gets_the_commands_usage_and_the_override_form(capsys):
    err = parse_error(capsys, ["distill", "-e", "S", "--train.max_steps=3", "a=1"])
    assert err.startswith("usage: radio distill ") and "usage: radio [-h] COMMAND" not in err
    assert "unrecognized arguments: --train.max_steps=3" in err
    assert "overrides are written key=value without dashes, e.g. train.max_steps=3\n" in err


def test_an_unknown_option_of_a_command_without_overrides_is_just_unknown(capsys):
    err = parse_error(capsys, ["models", "--train.max_steps=3"])
    assert err.startswith("usage: radio models ") and "unrecognized arguments: --train.max_steps=3\n" in err
    assert "overrides" not in err


def test_a_good_command_line_leaves_no_trace_in_the_namespace():
    args = build_parser().parse_args(["distill", "-e", "S", "a=1"])
    assert args.overrides == ["a=1"] and not [key for key in vars(args) if key.startswith("_")]
