"""Recipe systems: GMM-UBM, i-vector / PLDA and their fusion, end to end on a tiny synthetic corpus."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gmmspeaker.corpora.lists import read_train_list
from gmmspeaker.errors import ConfigError, DataError
from gmmspeaker.recipe.config import load_recipe
from gmmspeaker.recipe.runner import run_recipe
from gmmspeaker.scoring.fusion import LinearFusion
from gmmspeaker.scoring.trials import read_scores

REPO = Path(__file__).resolve().parents[2]
GMM = ("features", "ubm", "enroll", "score")
IVEC = ("statistics", "tv", "extract", "backend")

SYNTH = """experiment: sys
seed: 3
jobs: 1
system: {system}
defaults: {repo}/configs/features-8k.yaml
data:
  synthetic: {{n_speakers: 5, n_ubm_utterances: 4, n_enroll_utterances: 2, n_test_utterances: 2,
              background_speakers: 6, duration: 1.0, seed: 1}}
ubm: {{components: 8, iterations: 3}}
scoring: {{method: top_c, top_c: 3}}
ivector: {{rank: {rank}, iterations: 3, lda_dim: {lda}, plda_iterations: 3}}
evaluation: {{p_target: [0.01], det_plot: false}}
"""

LISTS = """experiment: lists
seed: 3
jobs: 1
system: {system}
defaults: {repo}/configs/features-8k.yaml
data:
  root: {root}
  ubm: ubm.txt
  train: train.txt
  enroll: enroll.txt
  trials: trials.txt
  dev_trials: dev_trials.txt
ubm: {{components: 8, iterations: 3}}
scoring: {{method: top_c, top_c: 3}}
ivector: {{rank: 6, iterations: 3, scoring: {scoring}, plda_iterations: 3}}
evaluation: {{p_target: [0.01], det_plot: false}}
"""


def _synth(tmp_path: Path, *, system: str = "[gmm_ubm, ivector]", rank: int = 8, lda: int = 4) -> Path:
    p = tmp_path / "sys.yaml"
    p.write_text(SYNTH.format(system=system, repo=REPO, rank=rank, lda=lda))
    return p


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """The synthetic corpus with explicit lists: train.txt labelled by folder, dev trials = half the trials."""
    from gmmspeaker.corpora.synthetic import SyntheticCorpusConfig, generate_corpus

    root = tmp_path_factory.mktemp("corpus") / "c"
    cfg = SyntheticCorpusConfig(
        n_speakers=5, n_ubm_utterances=4, n_enroll_utterances=2, n_test_utterances=3,
        background_speakers=6, duration=1.0, seed=2,
    )  # fmt: skip
    generate_corpus(root, cfg)
    ubm = (root / "ubm.txt").read_text().split()
    (root / "train.txt").write_text("".join(f"{p} {Path(p).parent.name}\n" for p in ubm))
    trials = (root / "trials.txt").read_text().splitlines()
    # trials of each speaker's first test utterance (utt002) are development trials
    dev = [t for t in trials if t.split()[1].endswith("utt002.wav")]
    assert dev and len(dev) < len(trials)
    (root / "dev_trials.txt").write_text("\n".join(dev) + "\n")
    (root / "trials.txt").write_text("\n".join(t for t in trials if t not in dev) + "\n")
    return root


def _lists(tmp_path: Path, root: Path, *, system: str, scoring: str = "plda") -> Path:
    p = tmp_path / "lists.yaml"
    p.write_text(LISTS.format(system=system, repo=REPO, root=root, scoring=scoring))
    return p


def _zscore(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / x.std()


def test_fusion_recipe_caches_and_reruns_only_later_stages(tmp_path):
    wd = tmp_path / "wd"
    r1 = run_recipe(_synth(tmp_path), workdir=wd)
    assert r1.actions == {s: "ran" for s in (*GMM, *IVEC, "fusion", "evaluate")}
    res = json.loads((wd / "results.json").read_text())
    assert set(res["systems"]) == {"gmm_ubm", "ivector", "fusion"}
    assert res["systems"]["fusion"]["eer"] == res["eer"] and res["system"] == ["gmm_ubm", "ivector"]
    assert res["fusion"]["method"] == "equal_weight"
    # without dev trials or a cohort: each system standardised over the trials, then averaged
    pairs, fused, _ = read_scores(wd / "scores.txt")
    pg, g, _ = read_scores(wd / "scores.gmm_ubm.txt")
    pi, iv, _ = read_scores(wd / "scores.ivector.txt")
    assert pairs == pg == pi
    np.testing.assert_allclose(fused, (_zscore(g) + _zscore(iv)) / 2, atol=2e-6)
    assert not np.allclose(g, iv)
    for name in ("gmm_ubm", "ivector"):
        m = res["systems"][name]
        assert set(m) >= {"eer", "min_dcf", "cllr"}

    r2 = run_recipe(_synth(tmp_path), workdir=wd)
    assert set(r2.actions.values()) == {"skipped"}

    # a back-end key: only the back end and what follows it
    r3 = run_recipe(_synth(tmp_path, lda=3), workdir=wd)
    assert [s for s, a in r3.actions.items() if a == "ran"] == ["backend", "fusion", "evaluate"]
    # the T-matrix rank: statistics are kept, the rest of the i-vector chain reruns; GMM stages kept
    r4 = run_recipe(_synth(tmp_path, rank=6, lda=3), workdir=wd)
    assert [s for s, a in r4.actions.items() if a == "ran"] == [
        "tv",
        "extract",
        "backend",
        "fusion",
        "evaluate",
    ]


def test_ivector_alone_then_fused_with_dev_trials(tmp_path, corpus):
    wd = tmp_path / "wd"
    r1 = run_recipe(_lists(tmp_path, corpus, system="ivector"), workdir=wd)
    assert r1.actions == {s: "ran" for s in ("features", "ubm", *IVEC, "evaluate", "short_enrolment")}
    assert not (wd / "models.h5").exists() and not (wd / "scores.ivector.txt").exists()
    res = json.loads((wd / "results.json").read_text())
    assert res["system"] == ["ivector"] and "systems" not in res and "calibrated" in res
    assert res["config"]["ivector"]["rank"] == 6
    first = (wd / "scores.txt").read_text()

    # the same workdir with both systems: features, UBM and the i-vector statistics are reused
    r2 = run_recipe(_lists(tmp_path, corpus, system="[gmm_ubm, ivector]"), workdir=wd)
    ran = [s for s, a in r2.actions.items() if a == "ran"]
    assert ran == ["enroll", "score", "backend", "fusion", "evaluate"]
    assert (wd / "scores.ivector.txt").read_text() == first
    res = json.loads((wd / "results.json").read_text())
    assert res["fusion"]["method"] == "logistic_regression"
    # the fused scores are the logistic-regression fusion trained on the dev scores
    _, dg, dkey = read_scores(wd / "dev_scores.gmm_ubm.txt")
    _, di, _ = read_scores(wd / "dev_scores.ivector.txt")
    fusion = LinearFusion.fit(np.c_[dg, di], np.array(dkey, dtype=bool), p_target=0.5)
    _, g, _ = read_scores(wd / "scores.gmm_ubm.txt")
    _, iv, _ = read_scores(wd / "scores.ivector.txt")
    _, fused, _ = read_scores(wd / "scores.txt")
    np.testing.assert_allclose(fused, fusion.apply(np.c_[g, iv]), atol=1e-4)
    np.testing.assert_allclose(res["fusion"]["weights"], fusion.weights, rtol=1e-4)
    gmm_scores = (wd / "scores.gmm_ubm.txt").read_text()

    # back to GMM-UBM alone: scores.txt (the fused file) must not pass for the GMM scores
    r3 = run_recipe(_lists(tmp_path, corpus, system="gmm_ubm"), workdir=wd)
    assert [s for s, a in r3.actions.items() if a == "ran"] == ["score", "evaluate", "short_enrolment"]
    assert (wd / "scores.txt").read_text() == gmm_scores


def test_cosine_scoring_and_errors(tmp_path, corpus):
    wd = tmp_path / "wd"
    run_recipe(_lists(tmp_path, corpus, system="ivector", scoring="cosine"), workdir=wd)
    _, s, _ = read_scores(wd / "scores.txt")
    assert np.all(np.abs(s) <= 1.0 + 1e-6) and not (wd / "plda.h5").exists()

    bad = tmp_path / "bad.yaml"
    text = _lists(tmp_path, corpus, system="ivector").read_text()
    bad.write_text(text.replace("system: ivector", "system: [ivector, plda]"))
    with pytest.raises(ConfigError, match=r"bad.yaml:4: 'system' must be one of gmm_ubm, ivector"):
        load_recipe(bad)
    bad.write_text(text.replace("scoring: plda", "scoring: lda"))
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: 'ivector.scoring' must be one of plda, cosine"):
        load_recipe(bad)
    bad.write_text(text.replace("rank: 6", "rank: 0"))
    with pytest.raises(ConfigError, match=r"'ivector.rank' must be positive"):
        load_recipe(bad)
    bad.write_text(text.replace("  train: train.txt\n", ""))
    with pytest.raises(ConfigError, match=r"bad.yaml:4: the ivector system needs data.train"):
        load_recipe(bad)
    lst = tmp_path / "train.txt"
    lst.write_text(f"{corpus}/ubm.txt spk a\n")
    with pytest.raises(DataError, match=r"train.txt:1: expected 'path speaker'"):
        read_train_list(lst, root=corpus)


def test_shipped_dspspeech20_recipes_inherit_the_gmm_recipe():
    root = (REPO / ".." / "shared" / "corpora" / "dspspeech20").resolve()
    if not (root / "train_backend.txt").is_file():
        pytest.skip(f"corpus not found at {root} (../shared/corpora/dspspeech20 beside the repo)")
    base = load_recipe(REPO / "recipes" / "dspspeech20.yaml")
    for name, system in (
        ("dspspeech20-ivector.yaml", ("ivector",)),
        ("dspspeech20-fusion.yaml", ("gmm_ubm", "ivector")),
    ):
        r = load_recipe(REPO / "recipes" / name)
        assert r.system == system and r.data.train == root / "train_backend.txt"
        assert (r.features, r.ubm, r.map, r.scoring, r.data.ubm) == (
            base.features, base.ubm, base.map, base.scoring, base.data.ubm
        )  # fmt: skip


def test_ivector_snorm_uses_cohort_ivectors_as_utterances_and_models(tmp_path, monkeypatch):
    from gmmspeaker.corpora.lists import Enrollment, Trial, Utterance
    from gmmspeaker.ivector.backend import PLDA, Backend

    rng = np.random.default_rng(7)
    d = 5
    spk = rng.standard_normal((8, d)) * 2
    X = np.vstack([c + rng.standard_normal((6, d)) for c in spk])
    labels = [str(i) for i in range(8) for _ in range(6)]
    backend = Backend.fit(X, labels)
    plda = PLDA.fit(backend.transform(X), labels, iterations=3)
    ivecs = {f"u{i}": rng.standard_normal(d) for i in range(20)}
    utt = {k: Utterance(utt_id=k, path=Path(k)) for k in ivecs}
    enroll = [Enrollment(model_id="a", utterances=(utt["u0"], utt["u1"])), Enrollment("b", (utt["u2"],))]
    trials = [Trial("a", utt["u3"], True, 1), Trial("b", utt["u3"], False, 2), Trial("b", utt["u4"], None, 3)]
    cohort = [f"u{i}" for i in range(10, 20)]
    from gmmspeaker.recipe.config import IvectorConfig, Recipe
    from gmmspeaker.systems import Ivector, Tests
    from gmmspeaker.workdir import Workdir

    recipe = Recipe(
        path=tmp_path / "r.yaml",
        experiment="x",
        system=("ivector",),
        ivector=IvectorConfig(normalization="snorm"),
    )
    system = Ivector(Workdir(tmp_path, recipe.system), recipe)
    system.set_parts(backend=backend, plda=plda, ivectors=ivecs)
    monkeypatch.setattr(Ivector, "dependencies", lambda self: {})  # no UBM / T matrix files here
    models = system.enrol_ivectors(enroll, ivecs)
    enrolled = {e.model_id: [u.utt_id for u in e.utterances] for e in enroll}
    norm = system.build_cohort(models, enrolled, cohort, cohort)
    pairs = [(t.model_id, t.test.utt_id) for t in trials]
    tests = Tests(ids=["u3", "u4"], source=ivecs)
    raw = system.score_trials(models, pairs, tests)
    got = system.normalise(raw, pairs, tests, norm)

    def llr(enroll_ids, test_id):  # one pair at a time, through the public scorer
        e = backend.transform(np.vstack([ivecs[u] for u in enroll_ids]))
        return plda.score([e], backend.transform(ivecs[test_id][None, :]))[0, 0]

    for k, t in enumerate(trials):
        model = [u.utt_id for u in next(e for e in enroll if e.model_id == t.model_id).utterances]
        s = llr(model, t.test.utt_id)
        assert raw[k] == pytest.approx(s, rel=1e-10)
        z = np.array([llr(model, c) for c in cohort])  # the model against cohort utterances
        tt = np.array([llr([c], t.test.utt_id) for c in cohort])  # cohort models against the test
        expect = 0.5 * ((s - z.mean()) / z.std() + (s - tt.mean()) / tt.std())
        assert got[k] == pytest.approx(expect, rel=1e-9)
