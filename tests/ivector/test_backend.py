"""Back end: centring, LDA against a direct eigen-computation, WCCN, length normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from gmmspeaker.errors import ConfigError, DataError, ModelError
from gmmspeaker.ivector.backend import Backend


def _labelled(rng, n_spk=8, per=10, d=6):
    centres = rng.standard_normal((n_spk, d)) * np.linspace(3, 0.5, d)
    mix = rng.standard_normal((d, d)) * 0.5 + np.eye(d)
    X = np.vstack([c + rng.standard_normal((per, d)) @ mix for c in centres]) + 5.0
    labels = [f"spk{s}" for s in range(n_spk) for _ in range(per)]
    return X, labels


def _scatters(X, labels):
    """Within / between scatter by plain loops over speakers (the reference)."""
    labels = np.asarray(labels)
    m = X.mean(axis=0)
    d = X.shape[1]
    Sw, Sb = np.zeros((d, d)), np.zeros((d, d))
    for s in np.unique(labels):
        Xs = X[labels == s]
        ms = Xs.mean(axis=0)
        Sw += sum(np.outer(x - ms, x - ms) for x in Xs)
        Sb += len(Xs) * np.outer(ms - m, ms - m)
    return Sw / len(X), Sb / len(X)


def _projector(A):
    Q, _ = np.linalg.qr(A)
    return Q @ Q.T


def test_lda_matches_direct_eigenvectors(rng):
    X, labels = _labelled(rng)
    be = Backend.fit(X, labels, lda_dim=3, wccn=False, length_norm=False)
    Sw, Sb = _scatters(X, labels)
    # independent route: the non-symmetric eigenproblem of Sw^-1 Sb
    evals, evecs = np.linalg.eig(np.linalg.solve(Sw, Sb))
    top = evecs[:, np.argsort(evals.real)[::-1][:3]].real
    np.testing.assert_allclose(_projector(be.projection), _projector(top), atol=1e-8)
    P = be.projection
    np.testing.assert_allclose(P.T @ Sw @ P, np.eye(3), atol=1e-9)
    np.testing.assert_allclose(np.diag(P.T @ Sb @ P), np.sort(evals.real)[::-1][:3], rtol=1e-8)
    Y = be.transform(X)
    np.testing.assert_allclose(Y, (X - X.mean(axis=0)) @ P, atol=1e-10)
    np.testing.assert_allclose(Y.mean(axis=0), 0.0, atol=1e-10)


@pytest.mark.parametrize("lda_dim", [None, 4])
def test_wccn_whitens_the_within_class_covariance(rng, lda_dim):
    X, labels = _labelled(rng)
    be = Backend.fit(X, labels, lda_dim=lda_dim, wccn=True, length_norm=False)
    Y = be.transform(X)
    Sw, _ = _scatters(Y, labels)
    np.testing.assert_allclose(Sw, np.eye(Y.shape[1]), atol=1e-9)
    Sw_raw, _ = _scatters(X, labels)
    assert not np.allclose(Sw_raw, np.eye(X.shape[1]), atol=0.1)  # the data were not white before


def test_length_norm_unit_norm_same_direction(rng):
    X, labels = _labelled(rng)
    plain = Backend.fit(X, labels, lda_dim=5, wccn=True, length_norm=False).transform(X)
    normed = Backend.fit(X, labels, lda_dim=5, wccn=True, length_norm=True).transform(X)
    np.testing.assert_allclose(np.linalg.norm(normed, axis=1), 1.0, rtol=1e-12)
    # the same direction as without normalisation (a wrong axis would scale by other norms)
    np.testing.assert_allclose(normed * np.linalg.norm(plain, axis=1, keepdims=True), plain, atol=1e-10)


def test_save_load_round_trip(tmp_path, rng):
    X, labels = _labelled(rng)
    be = Backend.fit(X, labels, lda_dim=3)
    be.save(tmp_path / "backend.h5")
    back = Backend.load(tmp_path / "backend.h5")
    assert back.lda_dim == 3 and back.wccn and back.length_norm
    np.testing.assert_array_equal(back.transform(X), be.transform(X))
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(ModelError, match="junk.h5"):
        Backend.load(tmp_path / "junk.h5")


def test_bad_inputs(rng):
    X, labels = _labelled(rng, n_spk=3)
    with pytest.raises(ConfigError, match="lda_dim must be in 1..2"):
        Backend.fit(X, labels, lda_dim=3)
    with pytest.raises(DataError, match="labels"):
        Backend.fit(X, labels[:-1])
    X2 = X.copy()
    X2[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        Backend.fit(X2, labels)
    be = Backend.fit(X, labels)
    with pytest.raises(DataError, match="expects 6"):
        be.transform(X[:, :4])
