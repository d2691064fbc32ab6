"""Bad recipes and bad command lines: one line naming the file (and line) or the option,
exit status 2, caught when the recipe is loaded (issue 19, items 9, 10, 12, 13)."""

from __future__ import annotations

import pytest

from gmmspeaker.cli import main
from tests.helpers import tiny_recipe


def _one_line_error(capsys, argv, *needles):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, err
    return err


def _recipe(tmp_path, old, new):
    p = tiny_recipe(tmp_path)
    text = p.read_text()
    assert old in text
    p.write_text(text.replace(old, new, 1))
    return p


@pytest.mark.parametrize(
    "old, new, needles",
    [
        # item 9: '..' passed the plain-name check (outputs went into the current folder)
        ("experiment: tiny", "experiment: '..'", ["tiny.yaml:1", "experiment", "'..'"]),
        ("experiment: tiny", "experiment: .", ["tiny.yaml:1", "experiment"]),
        # item 10
        ("seed: 3", "seed: -1", ["tiny.yaml:2", "seed", "-1"]),
        ("seed: 3", "seed: 3\nseed: 4", ["tiny.yaml:3", "duplicate key 'seed'", "line 2"]),
        ("ubm: {components", "ubm: {components: 2, components", ["duplicate key 'ubm.components'"]),
        # item 12: values found only after the expensive stages
        ("evaluation: {p_target: [0.01]", "evaluation: {c_miss: 0, p_target: [0.01]", ["c_miss", "positive"]),
        ("evaluation: {p_target: [0.01]", "evaluation: {c_fa: 0, p_target: [0.01]", ["c_fa", "positive"]),
        ("evaluation: {p_target: [0.01]", "evaluation: {p_target: []", ["p_target", "at least one"]),
        ("map: {relevance: 16}", "map: {relevance: 16, adapt: []}", ["map.adapt", "at least one"]),
        (
            "scoring: {method: top_c, top_c: 3}",
            "scoring: {method: linear}\nmap: {relevance: 16, adapt: [variances]}",
            ["linear", "map.adapt"],
        ),
    ],
)
def test_bad_recipe_values_are_one_line_at_load(tmp_path, capsys, old, new, needles):
    if new.startswith("scoring: {method: linear}"):
        p = tiny_recipe(tmp_path)
        text = p.read_text().replace("map: {relevance: 16}\n", "").replace(old, new)
        p.write_text(text)
    else:
        p = _recipe(tmp_path, old, new)
    _one_line_error(capsys, ["run", str(p), "--workdir", str(tmp_path / "wd"), "--dry-run"], *needles)


def test_non_utf8_recipe(tmp_path, capsys):
    p = tiny_recipe(tmp_path)
    p.write_bytes(p.read_bytes().replace(b"seed: 3", b"# caf\xe9\nseed: 3"))
    _one_line_error(capsys, ["run", str(p), "--dry-run"], "tiny.yaml:2", "UTF-8")


def _wavs(tmp_path, n=3):
    import numpy as np

    from tests.helpers import speechlike, write_wav

    rng = np.random.default_rng(0)
    for i in range(n):
        write_wav(tmp_path / "wav" / f"u{i}.wav", speechlike(rng, 0.5, f0=110 + 20 * i))
    lst = tmp_path / "ubm.txt"
    lst.write_text("".join(f"wav/u{i}.wav\n" for i in range(n)))
    return lst


@pytest.mark.parametrize("case", ["missing", "not_utf8", "folder"])
def test_features_bad_list(tmp_path, capsys, case):
    lst = tmp_path / "list.txt"
    if case == "not_utf8":
        lst.write_bytes(b"wav/u0.wav\nwav/caf\xe9.wav\n")
    elif case == "folder":
        lst.mkdir()
    _one_line_error(capsys, ["features", str(lst), "--out", str(tmp_path / "s")], str(lst))


@pytest.mark.parametrize(
    "argv",
    [
        ["features", "LIST", "--out", "S", "--jobs", "0"],
        [
            "score",
            "--features",
            "S",
            "--ubm",
            "U",
            "--models",
            "M",
            "--trials",
            "T",
            "--out",
            "O",
            "--jobs",
            "0",
        ],
        ["enroll", "--features", "S", "--ubm", "U", "--list", "LIST", "--out", "O", "--jobs", "0"],
        ["run", "RECIPE", "--jobs", "0"],
    ],
)
def test_jobs_zero_is_a_usage_error(tmp_path, capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / a) if a.isupper() else a for a in argv])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and "--jobs" in err and "-1" in err, err


def test_model_name_not_utf8(tmp_path, capsys):
    bad = b"caf\xe9".decode("utf-8", "surrogateescape")  # what Python makes of such argv
    _one_line_error(
        capsys, ["enroll", str(tmp_path), "--model", bad, str(tmp_path / "a.wav")], "--model", "UTF-8"
    )


def test_workdir_not_utf8(tmp_path, capsys):
    wd = str(tmp_path) + "/" + b"wd-\xe9".decode("utf-8", "surrogateescape")
    _one_line_error(capsys, ["-q", "run", str(tiny_recipe(tmp_path)), "--workdir", wd], "workdir", "UTF-8")


def test_features_config_takes_an_ivector_fusion_recipe(tmp_path, capsys):
    """Item 13: the recipe's features: section is used, its other sections ignored."""
    lst = _wavs(tmp_path)
    recipe = tiny_recipe(
        tmp_path, extra="system: [gmm_ubm, ivector]\nivector: {rank: 4}\nfusion: {p_target: 0.5}"
    )
    assert main(["-q", "features", str(lst), "--out", str(tmp_path / "s"), "--config", str(recipe)]) == 0
    from gmmspeaker.recipe.config import load_recipe
    from gmmspeaker.store import FeatureStore

    assert FeatureStore(tmp_path / "s").config["n_mfcc"] == load_recipe(recipe).features["n_mfcc"]
