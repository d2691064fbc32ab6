"""The shipped VoxCeleb1 and LibriSpeech recipes, run end to end on tiny fake trees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gmmspeaker.recipe.runner import run_recipe
from tests.helpers import speechlike, write_wav
from tests.recipe.checks import check_metrics_against_scores

REPO = Path(__file__).resolve().parents[2]


def _small(tmp_path: Path, recipe: str) -> Path:
    """The shipped recipe as defaults, with a UBM small enough for a few seconds of audio."""
    p = tmp_path / f"small-{recipe}"
    p.write_text(
        f"defaults: {REPO / 'recipes' / recipe}\njobs: 1\nubm: {{components: 4, iterations: 2}}\n"
        "scoring: {top_c: 2}\nevaluation: {det_plot: false}\n"
    )
    return p


def test_librispeech_recipe_on_fake_tree(tmp_path, monkeypatch):
    from gmmspeaker.corpora.librispeech import prepare_librispeech

    rng = np.random.default_rng(0)
    root = tmp_path / "LibriSpeech" / "train-clean-100"
    for s, spk in enumerate(["19", "26", "27", "32", "39", "40"]):
        for chapter in ("198", "227"):
            for i in range(4):
                write_wav(
                    root / spk / chapter / f"{spk}-{chapter}-{i:04d}.flac",
                    speechlike(rng, 0.6, rate=16000, f0=90 + 25 * s),
                    rate=16000,
                )
    prepare_librispeech(root, root / "lists", seed=0, n_enroll=2, n_test=2, ubm_fraction=0.5)
    monkeypatch.setenv("LIBRISPEECH_ROOT", str(root))
    res = run_recipe(_small(tmp_path, "librispeech.yaml"), workdir=tmp_path / "wd")
    r = res.results
    trials = (root / "lists" / "trials.txt").read_text().split()
    assert r is not None and (r["n_target"], r["n_nontarget"]) == (
        trials.count("target"),
        trials.count("nontarget"),
    )
    assert r["n_target"] > 0 and r["n_nontarget"] > 0
    # the reported EER is the one of the written scores (brute force, ROC convex hull)
    check_metrics_against_scores(tmp_path / "wd", r)


def test_voxceleb1_recipe_on_fake_tree(tmp_path, monkeypatch):
    from gmmspeaker.corpora.voxceleb import prepare_voxceleb1

    rng = np.random.default_rng(1)
    root = tmp_path / "vox1"
    speakers = [f"id1{n:04d}" for n in range(270, 276)]
    files: dict[str, list[str]] = {}
    for s, spk in enumerate(speakers):
        for _v, video in enumerate(("x6uYqmx31kE", "8jEAjG6SegY")):
            for i in range(1, 3):
                rel = f"{spk}/{video}/{i:05d}.wav"
                write_wav(root / "wav" / rel, speechlike(rng, 0.6, rate=16000, f0=90 + 25 * s), rate=16000)
                files.setdefault(spk, []).append(rel)
    # the first three speakers are in the trials, the other three are background only
    lines = []
    for spk in speakers[:3]:
        for other in speakers[:3]:
            lines.append(f"{int(spk == other)} {files[spk][0]} {files[other][3]}")
    (root / "veri_test2.txt").write_text("\n".join(lines) + "\n")
    prepare_voxceleb1(root, root / "veri_test2.txt", root / "lists")
    monkeypatch.setenv("VOXCELEB1_ROOT", str(root))
    res = run_recipe(_small(tmp_path, "voxceleb1.yaml"), workdir=tmp_path / "wd")
    assert res.results is not None
    assert res.results["n_target"] == 3 and res.results["n_nontarget"] == 6


def test_corpus_recipes_need_their_root(tmp_path, monkeypatch):
    from gmmspeaker.errors import ConfigError

    monkeypatch.delenv("VOXCELEB1_ROOT", raising=False)
    with pytest.raises(ConfigError, match="VOXCELEB1_ROOT"):
        run_recipe(_small(tmp_path, "voxceleb1.yaml"), workdir=tmp_path / "wd")


def test_fsdd_training_list_is_ubm_txt_labelled_by_file_name(fsdd):
    """recipes/fsdd-train.txt (the FSDD recipe's data.train, named ``${RECIPE_DIR}/...``):
    exactly the corpus's ubm.txt, in order, each file with the speaker of its name."""
    from gmmspeaker.corpora.lists import read_train_list, read_ubm_list
    from gmmspeaker.recipe.config import load_recipe

    r = load_recipe(REPO / "recipes" / "fsdd.yaml")
    assert r.data.train == (REPO / "recipes" / "fsdd-train.txt").resolve()
    train = read_train_list(r.data.train, root=r.data.root)
    ubm = read_ubm_list(r.data.ubm, root=r.data.root)
    assert [u.utt_id for u in train] == [u.utt_id for u in ubm] and len(train) == 1500
    assert all(u.speaker == Path(u.path).stem.split("_")[1] for u in train)
