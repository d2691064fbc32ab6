"""Interop: scikit-learn GaussianMixture objects and Kaldi's text DiagGMM format."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy.special import logsumexp

from gmmspeaker.errors import ModelError
from gmmspeaker.gmm.interop import kaldi_gconsts, read_kaldi_diag_gmm, write_kaldi_diag_gmm
from gmmspeaker.gmm.model import GaussianMixture
from tests.gmm.conftest import draw_mixture

sklearn_mixture = pytest.importorskip("sklearn.mixture", reason="scikit-learn is not installed")

COV_TYPES = ("diag", "full", "spherical", "tied")


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    X, _ = draw_mixture(np.random.default_rng(3), 600, K=3, D=4, sep=4.0)
    return X


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_sklearn_round_trip_keeps_parameters_and_densities(data: np.ndarray, cov_type: str) -> None:
    sk = sklearn_mixture.GaussianMixture(3, covariance_type=cov_type, random_state=0).fit(data)
    ours = GaussianMixture.from_sklearn(sk)
    assert ours.covariance_type == cov_type and ours.n_components == 3
    # a loaded model scores exactly as scikit-learn does
    np.testing.assert_allclose(ours.score_samples(data), sk.score_samples(data), rtol=1e-10, atol=1e-9)
    back = ours.to_sklearn()
    for attr in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"):
        np.testing.assert_allclose(getattr(back, attr), getattr(sk, attr), rtol=1e-10, atol=1e-12)
    rng = np.random.default_rng(1)
    X_new = rng.normal(0, 5, size=(50, 4))
    np.testing.assert_allclose(back.score_samples(X_new), sk.score_samples(X_new), rtol=1e-10)
    np.testing.assert_array_equal(back.predict(X_new), sk.predict(X_new))


@pytest.mark.parametrize("cov_type", ["diag", "full"])
def test_to_sklearn_of_our_fit_scores_like_ours(data: np.ndarray, cov_type: str) -> None:
    ours = GaussianMixture(3, covariance_type=cov_type, max_iter=5, random_state=0).fit(data)
    sk = ours.to_sklearn()
    np.testing.assert_allclose(sk.score_samples(data), ours.score_samples(data), rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(sk.predict_proba(data), ours.predict_proba(data), atol=1e-9)


def test_from_sklearn_rejects_unfitted() -> None:
    with pytest.raises(ModelError, match="fitted"):
        GaussianMixture.from_sklearn(sklearn_mixture.GaussianMixture(2))


# --------------------------------------------------------------------------- Kaldi
KALDI_TEXT = """<DiagGMM>
<GCONSTS>  [ {g0} {g1} ]
<WEIGHTS>  [ 0.25 0.75 ]
<MEANS_INVVARS>  [
  0.5 -1 2
  0 0.25 -0.125 ]
<INV_VARS>  [
  1 2 4
  0.5 0.25 1 ]
</DiagGMM>
"""


def _reference_gconst(w: float, mean_invvars: list[float], inv_vars: list[float]) -> float:
    """Kaldi's constant computed term by term from the natural parameters (independent of
    :func:`kaldi_gconsts`, which works from means and variances)."""
    g = math.log(w) - 0.5 * len(inv_vars) * math.log(2 * math.pi)
    for mi, iv in zip(mean_invvars, inv_vars, strict=True):
        g += 0.5 * math.log(iv) - 0.5 * mi * mi / iv
    return g


def _kaldi_file(tmp_path: Path, **override: str) -> Path:
    g0 = _reference_gconst(0.25, [0.5, -1, 2], [1, 2, 4])
    g1 = _reference_gconst(0.75, [0, 0.25, -0.125], [0.5, 0.25, 1])
    text = KALDI_TEXT.format(g0=f"{g0:.7g}", g1=f"{g1:.7g}")
    for old, new in override.items():
        text = text.replace(old, new)
    p = tmp_path / "ubm.txt"
    p.write_text(text)
    return p


def _numbers(text: str) -> list[float]:
    return [float(t) for t in text.replace("[", " ").replace("]", " ").split() if not t.startswith("<")]


def test_kaldi_read_gives_the_natural_parameters_back(tmp_path: Path) -> None:
    w, mu, var = read_kaldi_diag_gmm(_kaldi_file(tmp_path))
    np.testing.assert_allclose(w, [0.25, 0.75])
    np.testing.assert_allclose(1 / var, [[1, 2, 4], [0.5, 0.25, 1]])
    np.testing.assert_allclose(mu / var, [[0.5, -1, 2], [0, 0.25, -0.125]])


def test_kaldi_text_round_trip(tmp_path: Path) -> None:
    src = _kaldi_file(tmp_path)
    gmm = GaussianMixture.from_params(*read_kaldi_diag_gmm(src))
    out = tmp_path / "out.txt"
    write_kaldi_diag_gmm(out, gmm.weights_, gmm.means_, gmm.covariances_)
    # same numbers, same token layout (GCONSTS recomputed: equal to the printed 7 digits)
    np.testing.assert_allclose(_numbers(out.read_text()), _numbers(src.read_text()), rtol=1e-6)
    tokens = lambda p: [t for t in p.read_text().split() if t.startswith("<")]  # noqa: E731
    assert tokens(out) == tokens(src)
    w2, mu2, var2 = read_kaldi_diag_gmm(out)
    np.testing.assert_allclose(w2, gmm.weights_, rtol=1e-12)
    np.testing.assert_allclose(mu2, gmm.means_, rtol=1e-8)
    np.testing.assert_allclose(var2, gmm.covariances_, rtol=1e-8)


def test_kaldi_log_likelihood_matches_ours(tmp_path: Path) -> None:
    src = _kaldi_file(tmp_path)
    gmm = GaussianMixture.from_params(*read_kaldi_diag_gmm(src))
    X = np.random.default_rng(0).normal(size=(40, 3))
    # Kaldi's own formula over the file's numbers: gconst + x.mean_invvar - x^2.inv_var / 2
    nums = _numbers(src.read_text())
    g, mi, iv = np.array(nums[:2]), np.array(nums[4:10]).reshape(2, 3), np.array(nums[10:]).reshape(2, 3)
    kaldi_ll = logsumexp(g + X @ mi.T - 0.5 * (X**2) @ iv.T, axis=1)
    np.testing.assert_allclose(gmm.score_samples(X), kaldi_ll, rtol=1e-6)


def test_kaldi_write_then_read_random_model(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    K, D = 16, 20
    w = rng.dirichlet(np.ones(K))
    mu = rng.normal(0, 3, (K, D))
    var = rng.uniform(0.1, 4, (K, D))
    out = tmp_path / "random.txt"
    write_kaldi_diag_gmm(out, w, mu, var)
    w2, mu2, var2 = read_kaldi_diag_gmm(out)
    np.testing.assert_allclose(w2, w, rtol=1e-8)
    np.testing.assert_allclose(var2, var, rtol=1e-8)
    np.testing.assert_allclose(mu2, mu, rtol=1e-7, atol=1e-9)
    printed_g = np.array(_numbers(out.read_text())[:K])
    ref = [_reference_gconst(w[k], list(mu[k] / var[k]), list(1 / var[k])) for k in range(K)]
    np.testing.assert_allclose(printed_g, ref, rtol=1e-8)
    np.testing.assert_allclose(kaldi_gconsts(w, mu, var), ref, rtol=1e-12)


def test_kaldi_write_rejects_full_covariances(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="diagonal"):
        write_kaldi_diag_gmm(tmp_path / "x.txt", np.ones(1), np.zeros((1, 2)), np.eye(2)[None], "full")


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"<GCONSTS>  [ ": "<GCONSTS>  [ 3.5 "}, "GCONSTS> has 3 values"),
        ({"0.5 0.25 1 ]": "0.5 0.25 1.5 ]"}, "GCONSTS> disagree.*component 1"),
        ({"<WEIGHTS>  [ 0.25 0.75 ]": "<WEIGHTS>  [ 0.25 0.7 ]"}, "sum to 1"),
        ({"0.5 0.25 1 ]": "0.5 -0.25 1 ]"}, "INV_VARS> must be positive; component 1, dim 1"),
        ({"0 0.25 -0.125 ]": "0 0.25 ]"}, "rows have different lengths"),
        ({"0.5 -1 2": "0.5 -1 abc"}, "'abc' is not a number"),
        ({"<DiagGMM>": "<FullGMM>"}, "expected <DiagGMM>"),
        ({"</DiagGMM>": ""}, "end of file"),
        ({"<INV_VARS>": "<VARS>"}, "unexpected token '<VARS>'"),
        ({"  0.5 0.25 1 ]": "  0.5 0.25 1"}, "missing '\\]'"),
    ],
)
def test_bad_kaldi_text_names_file_and_problem(tmp_path: Path, override: dict[str, str], match: str) -> None:
    p = _kaldi_file(tmp_path, **override)
    with pytest.raises(ModelError, match=match) as info:
        read_kaldi_diag_gmm(p)
    assert str(p) in str(info.value)


def test_kaldi_binary_and_missing_files(tmp_path: Path) -> None:
    b = tmp_path / "final.dubm"
    b.write_bytes(b"\0B<DiagGMM> \x04\x00")
    with pytest.raises(ModelError, match="binary Kaldi file.*gmm-global-copy --binary=false"):
        read_kaldi_diag_gmm(b)
    with pytest.raises(ModelError, match="nope.txt: cannot read"):
        read_kaldi_diag_gmm(tmp_path / "nope.txt")
