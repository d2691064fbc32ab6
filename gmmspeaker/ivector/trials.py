"""i-vectors of a set of utterances on disk, and i-vector trial scoring.

:func:`save_ivectors` / :func:`load_ivectors` keep raw i-vectors by utterance id in one
HDF5 file; :func:`score_ivector_trials` scores a trial list with them (PLDA or cosine,
then optional cohort normalisation).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from gmmspeaker._io import read_h5, write_h5
from gmmspeaker._typing import FloatArray, PathLike
from gmmspeaker.errors import DataError, ModelError

if TYPE_CHECKING:
    from gmmspeaker.corpora.lists import Enrollment, Trial
    from gmmspeaker.ivector.backend import PLDA, Backend

__all__ = ["save_ivectors", "load_ivectors", "score_ivector_trials"]

IVECTOR_FORMAT = "gmmspeaker-ivectors"


# ---------------------------------------------------------------------------
# i-vector files
# ---------------------------------------------------------------------------


def save_ivectors(path: PathLike, ids: Sequence[str], vectors: FloatArray) -> None:
    """Write i-vectors (``ids`` strings, ``vectors`` (U, R) float64) to HDF5 atomically."""
    write_h5(path, IVECTOR_FORMAT, {"ids": list(ids), "vectors": np.asarray(vectors, dtype=np.float64)})


def load_ivectors(path: PathLike) -> dict[str, FloatArray]:
    """Read :func:`save_ivectors` output as ``{utterance id: (R,) float64}``.

    Raises
    ------
    ModelError
        Missing or malformed file (the message names it).
    """
    arrays, _ = read_h5(path, IVECTOR_FORMAT, ("ids", "vectors"), what="i-vector file")
    ids, vectors = arrays["ids"], np.asarray(arrays["vectors"], dtype=np.float64)
    if vectors.shape[0] != len(ids):
        raise ModelError(f"{path}: {len(ids)} ids for {vectors.shape[0]} i-vectors")
    return dict(zip(ids, vectors))


# ---------------------------------------------------------------------------
# Scoring i-vector trials
# ---------------------------------------------------------------------------


def _score_models(enroll: Sequence[FloatArray], test: FloatArray, plda: PLDA | None) -> FloatArray:
    from gmmspeaker.ivector.backend import cosine_scores

    if test.shape[0] == 0 or len(enroll) == 0:
        return np.empty((len(enroll), test.shape[0]))
    return plda.score(enroll, test) if plda is not None else cosine_scores(enroll, test)


def score_ivector_trials(
    trials: Sequence[Trial],
    enrollments: Sequence[Enrollment],
    ivectors: dict[str, FloatArray],
    backend: Backend,
    plda: PLDA | None,
    *,
    cohort: Sequence[str] = (),
    normalization: str = "none",
    top_n: int = 200,
) -> tuple[FloatArray, FloatArray]:
    """Score trials with i-vectors: PLDA (multi-enrolment LLR) or cosine, then optional normalisation.

    Parameters
    ----------
    trials, enrollments : sequences of Trial / Enrollment
        The protocol.
    ivectors : dict of str to ndarray (R,)
        Raw i-vectors by utterance id (a missing test utterance scores NaN).
    backend : Backend
        Applied to every i-vector before scoring.
    plda : PLDA or None
        PLDA model; ``None`` scores by cosine similarity.
    cohort : sequence of str
        Utterance ids of the normalisation cohort: the cohort's i-vectors play the
        cohort utterances (Z-norm) and, one each, the cohort models (T-norm).
    normalization : {"none", "znorm", "tnorm", "ztnorm", "snorm", "asnorm"}
    top_n : int
        Adaptive S-norm cohort size per side.

    Returns
    -------
    (scores, raw) : two ndarrays, shape (n_trials,), float64
        Normalised and raw scores, in trial order.

    Raises
    ------
    DataError
        A trial names an unknown model, or a model has no enrolment i-vector.
    """
    from gmmspeaker.scoring.norm import normalize_scores, self_trial_masks

    model_ids = [e.model_id for e in enrollments]
    mpos = {m: i for i, m in enumerate(model_ids)}
    enroll: list[FloatArray] = []
    for e in enrollments:
        rows = [ivectors[u.utt_id] for u in e.utterances if u.utt_id in ivectors]
        if not rows:
            raise DataError(
                f"model {e.model_id!r}: none of its {len(e.utterances)} enrollment files has an i-vector"
            )
        enroll.append(backend.transform(np.vstack(rows)))
    tests = sorted({t.test.utt_id for t in trials if t.test.utt_id in ivectors})
    tpos = {u: i for i, u in enumerate(tests)}
    T = backend.transform(np.vstack([ivectors[u] for u in tests])) if tests else np.empty((0, backend.dim))
    matrix = _score_models(enroll, T, plda)
    for i, t in enumerate(trials):
        if t.model_id not in mpos:
            raise DataError(f"trial {i + 1} (line {t.line}): unknown model {t.model_id!r}")
    has = np.array([t.test.utt_id in tpos for t in trials], dtype=bool)
    model_idx = np.array([mpos[t.model_id] for t in trials], dtype=np.int64)
    test_idx = np.array([tpos.get(t.test.utt_id, 0) for t in trials], dtype=np.int64)
    raw = np.full(len(trials), np.nan)
    if tests:
        raw[has] = matrix[model_idx[has], test_idx[has]]
    if normalization == "none":
        return raw, raw
    cids = [u for u in cohort if u in ivectors]
    if len(cids) < 2:
        raise DataError(f"i-vector score normalisation needs at least 2 cohort i-vectors, got {len(cids)}")
    C = backend.transform(np.vstack([ivectors[u] for u in cids]))
    cohort_models = [c[None, :] for c in C]
    own, self_test, self_cohort = self_trial_masks(
        [{u.utt_id for u in e.utterances} for e in enrollments], cids, tests
    )
    model_cohort = np.ma.MaskedArray(_score_models(enroll, C, plda), mask=own)
    if tests:
        cohort_test = np.ma.MaskedArray(_score_models(cohort_models, T, plda), mask=self_test)
    else:  # every test unscored: a placeholder column that no trial reads
        cohort_test = np.zeros((len(cids), 1))
    cohort_cohort = (
        np.ma.MaskedArray(_score_models(cohort_models, C, plda), mask=self_cohort)
        if normalization == "ztnorm"
        else None
    )
    normed = normalize_scores(
        np.where(has, raw, 0.0),
        method=normalization,
        model_cohort=model_cohort if normalization in ("znorm", "ztnorm", "snorm", "asnorm") else None,
        cohort_test=cohort_test if normalization in ("tnorm", "ztnorm", "snorm", "asnorm") else None,
        cohort_cohort=cohort_cohort,
        model_idx=model_idx,
        test_idx=test_idx,
        top_n=top_n,
    )
    return np.where(has, normed, np.nan), raw
