"""The command line's help (issue 20, item 8): every option explained with its default,
required arguments shown as required, a description per command, one wording of -q, and
bare ``gmmspeaker`` printing the help."""

from __future__ import annotations

import argparse
import re

import pytest

from gmmspeaker.cli import build_parser, main


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    ap = build_parser()
    (sub,) = [a for a in ap._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def test_every_option_has_help_and_its_default_is_shown():
    subs = _subparsers()
    assert {
        "run",
        "features",
        "train-ubm",
        "enroll",
        "verify",
        "identify",
        "score",
        "evaluate",
        "info",
    } <= set(subs)
    for name, p in subs.items():
        text = _flat(p.format_help())
        for action in p._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            where = f"{name} {'/'.join(action.option_strings) or action.dest}"
            assert action.help and len(action.help) > 8, f"{where}: no help text"
            d = action.default
            empty = d is None or d is False or d is argparse.SUPPRESS  # identity: a default of 0 is shown
            if action.option_strings and not empty and action.nargs != 0:
                shown = ",".join(map(str, d)) if isinstance(d, (list, tuple)) else str(d)
                assert f"(default: {shown})" in text, f"{where}: default {shown} not shown"


def test_required_arguments_are_shown_as_required():
    subs = _subparsers()
    for name in ("verify", "identify"):
        usage = _flat(subs[name].format_usage())
        assert re.search(r"EXPDIR AUDIO \[AUDIO \.\.\.\]$", usage.strip()), usage
    assert re.search(r"\] --model ID \[", _flat(subs["verify"].format_usage()))
    assert "[--model" not in subs["verify"].format_usage()
    for name, opt in (
        ("features", "--out OUT"),
        ("train-ubm", "--features FEATURES"),
        ("score", "--trials TRIALS"),
    ):
        usage = _flat(subs[name].format_usage())
        assert opt in usage and f"[{opt}" not in usage, f"{name}: {opt} shown as optional"
    # enroll has two forms; its usage shows both, with what each requires
    usage = subs["enroll"].format_usage()
    assert (
        "enroll EXPDIR --model ID" in usage and "--features STORE --ubm UBM --list LIST --out MODELS" in usage
    )


def test_each_command_has_a_description_and_q_has_one_wording():
    ap = build_parser()
    quiet = {a.help for a in ap._actions if "--quiet" in a.option_strings}
    for name, p in _subparsers().items():
        assert p.description and len(p.description) > 30, f"{name}: no description"
        quiet |= {a.help for a in p._actions if "--quiet" in a.option_strings}
    assert len(quiet) == 1


def test_bare_gmmspeaker_prints_the_help(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: gmmspeaker") and "verify" in out and "first steps" in out
    assert main(["-q"]) == 0 and "usage: gmmspeaker" in capsys.readouterr().out


def test_info_on_a_folder_that_is_no_experiment_says_what_to_do(tmp_path, capsys):
    assert main(["info", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "neither a trained experiment" in err and "gmmspeaker run RECIPE" in err
    assert main(["info", str(tmp_path / "nothing")]) == 2
    assert "no such file" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["verify", "--help"], ["run", "--help"], ["models", "--help"]])
def test_help_exits_zero(argv, capsys):
    with pytest.raises(SystemExit) as ex:
        main(argv)
    assert ex.value.code == 0 and "usage:" in capsys.readouterr().out


def test_python_dash_m_runs_the_same_command_line():
    """``python -m gmmspeaker`` is the console script: the same help, the same exit status on a bad command."""
    import subprocess
    import sys

    ok = subprocess.run([sys.executable, "-m", "gmmspeaker", "run", "--help"], capture_output=True, text=True)
    assert ok.returncode == 0 and "--until-stage" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "gmmspeaker", "no-such-command"], capture_output=True, text=True
    )
    assert bad.returncode != 0 and "no-such-command" in bad.stderr
