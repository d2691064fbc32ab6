"""The stage table and the typed workdir: what a run writes is what the table and Workdir name."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from gmmspeaker.recipe.config import STAGES, load_recipe
from gmmspeaker.recipe.runner import run_recipe
from gmmspeaker.recipe.stages import TABLE, needed_stages, stage
from gmmspeaker.workdir import Workdir
from tests.recipe.seams import tiny_recipe


def _named_files(wd: Workdir) -> set[str]:
    """Every file name the Workdir spells (properties, and per-system / per-kind methods)."""
    names = set()
    for attr, value in inspect.getmembers(type(wd)):
        if isinstance(value, property):
            p = getattr(wd, attr)
            if isinstance(p, Path):
                names.add(p.relative_to(wd.path).parts[0])
    for system in (None, *wd.systems):
        for kind in ("scores", "dev_scores", "scores.raw", "scores.calibrated"):
            names.add(wd.scores(system, kind).name)
    for system in wd.systems:
        for f in (wd.norm_cohort, wd.cohort_models, wd.user_models):
            names.add(f(system).name)
    return names


def test_table_order_is_the_clis_stage_list():
    assert tuple(s.name for s in TABLE) == STAGES
    assert stage("score").systems == ("gmm_ubm",) and stage("fusion").systems == ("fusion",)


@pytest.mark.parametrize(
    "system, norm, expected",
    [
        ("gmm_ubm", "snorm", ("features", "ubm", "enroll", "score", "evaluate", "short_enrolment")),
        (
            "ivector",
            "znorm",
            ("features", "ubm", "statistics", "tv", "extract", "backend", "evaluate", "short_enrolment"),
        ),
        ("[gmm_ubm, ivector]", "none", tuple(s for s in STAGES[:-1] if not s.startswith("isv"))),
        (
            "isv",
            "snorm",
            (
                "features",
                "ubm",
                "statistics",
                "isv_train",
                "isv_enroll",
                "isv_score",
                "evaluate",
                "short_enrolment",
            ),
        ),
        ("[gmm_ubm, ivector, isv]", "none", STAGES[:-1]),  # short_enrolment: one system alone
    ],
)
def test_a_run_writes_the_tables_outputs_and_only_files_the_workdir_names(tmp_path, system, norm, expected):
    isv = f"isv: {{rank: 3, iterations: 2, normalization: {norm if system == 'isv' else 'none'}, cohort_top_n: 5}}"
    recipe = tiny_recipe(tmp_path, name="t", system=system, norm=norm, extra=isv)
    r = load_recipe(recipe)
    assert needed_stages(r) == expected
    wd = tmp_path / "wd"
    dry = run_recipe(recipe, workdir=wd, dry_run=True)
    assert tuple(dry.actions) == expected and set(dry.actions.values()) == {"would run"}
    res = run_recipe(recipe, workdir=wd, log_file=True)
    assert set(res.actions.values()) == {"ran"}
    w = Workdir(wd, r.system)
    for name in expected:
        for out in stage(name).outputs(w, r):
            assert out.exists(), f"{name}: {out.name} missing"
    unnamed = {p.name for p in wd.iterdir()} - _named_files(w)
    assert not unnamed, f"files no Workdir path names: {sorted(unnamed)}"
    # a lost output of any stage makes that stage run again
    for name in expected[1:]:
        out = stage(name).outputs(w, r)[-1]
        out.unlink()
        again = run_recipe(recipe, workdir=wd, log_file=False, dry_run=True)
        assert again.actions[name] == "would run" and again.reasons[name] == "outputs missing", name
        run_recipe(recipe, workdir=wd, log_file=False)
