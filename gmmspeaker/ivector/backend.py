"""i-vector back end: centring, LDA, WCCN, length normalisation, two-covariance PLDA, cosine.

The chain fitted by :meth:`Backend.fit` on speaker-labelled training i-vectors is

1. centring on the training mean;
2. optional linear discriminant analysis: the leading generalised eigenvectors of the
   between-class and within-class scatter matrices (``scipy.linalg.eigh(Sb, Sw)``), scaled
   so that the within-class scatter becomes the identity;
3. optional within-class covariance normalisation (WCCN): ``x -> C^-1 x`` with ``C`` the
   Cholesky factor of the within-class covariance ``W = C C'`` (so ``C^-T`` is the Cholesky
   factor of ``W^-1``, and the training within-class covariance becomes the identity);
4. optional length normalisation to unit Euclidean norm.

:class:`PLDA` is the two-covariance (simplified) PLDA of Ioffe and of Sizov, Lee and
Kinnunen: a speaker variable ``y ~ N(mean, between)`` and i-vectors ``x | y ~ N(y, within)``
(``between`` and ``within`` are covariances; their inverses are the precisions ``B``, ``W``
of the papers). It is trained by EM with speaker labels and scores the proper
multi-enrolment log-likelihood ratio: all enrolment i-vectors of a model together against
one test i-vector, in closed form from the sufficient statistics ``n`` (count) and ``f``
(sum of the model's i-vectors).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import scipy.linalg

from gmmspeaker._io import read_h5, write_h5
from gmmspeaker._typing import FloatArray, PathLike
from gmmspeaker.errors import ConfigError, DataError, ModelError

__all__ = ["Backend", "PLDA", "cosine_scores", "length_normalize"]

logger = logging.getLogger(__name__)

_BACKEND_FORMAT = "gmmspeaker-ivector-backend"
_PLDA_FORMAT = "gmmspeaker-plda"
_LOG_2PI = math.log(2.0 * math.pi)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def _as_matrix(X: npt.ArrayLike, name: str) -> FloatArray:
    A = np.asarray(X, dtype=np.float64)
    if A.ndim != 2:
        raise DataError(f"{name} must be a 2-D array (n_vectors, n_dims), got shape {A.shape}")
    if A.shape[0] == 0:
        raise DataError(f"{name} holds no vectors")
    if not np.all(np.isfinite(A)):
        raise DataError(f"{name} holds {int(np.count_nonzero(~np.isfinite(A)))} NaN/inf value(s)")
    return A


def _labels_index(labels: Sequence[str], n: int) -> tuple[list[str], npt.NDArray[np.intp]]:
    if len(labels) != n:
        raise DataError(f"got {len(labels)} speaker labels for {n} vectors")
    names, idx = np.unique(np.asarray([str(x) for x in labels], dtype=object), return_inverse=True)
    return [str(x) for x in names], idx.astype(np.intp)


def _class_sums(X: FloatArray, idx: npt.NDArray[np.intp], n_classes: int) -> tuple[FloatArray, FloatArray]:
    """Per-class counts ``(S,)`` and sums ``(S, d)`` by one sparse-free scatter-add."""
    counts = np.bincount(idx, minlength=n_classes).astype(np.float64)
    sums = np.zeros((n_classes, X.shape[1]))
    np.add.at(sums, idx, X)
    return counts, sums


def _within_scatter(
    X: FloatArray, idx: npt.NDArray[np.intp], counts: FloatArray, sums: FloatArray
) -> FloatArray:
    """Sum over vectors of ``(x - m_s)(x - m_s)'`` (``m_s`` the class mean), shape (d, d)."""
    means = sums / counts[:, None]
    D = X - means[idx]
    return D.T @ D


def _chol(A: FloatArray, what: str) -> FloatArray:
    """Lower Cholesky factor of a symmetric positive definite matrix, or a clear error."""
    try:
        return scipy.linalg.cholesky((A + A.T) / 2.0, lower=True)
    except np.linalg.LinAlgError:
        raise DataError(
            f"{what} is not positive definite: too few training vectors or speakers for the "
            f"dimension {A.shape[0]} (reduce it with LDA or a smaller i-vector rank)"
        ) from None


def _spd_inverse(A: FloatArray, what: str) -> FloatArray:
    """Inverse of a symmetric positive definite matrix through its Cholesky factor."""
    C = _chol(A, what)
    inv = scipy.linalg.cho_solve((C, True), np.eye(A.shape[0]))
    return (inv + inv.T) / 2.0


def _logdet_chol(C: FloatArray) -> float:
    return float(2.0 * np.sum(np.log(np.diag(C))))


def length_normalize(X: npt.ArrayLike) -> FloatArray:
    """Scale every row to unit Euclidean norm (zero rows stay zero).

    Parameters
    ----------
    X : array_like, shape (n, d)

    Returns
    -------
    ndarray, shape (n, d), float64
    """
    A = np.asarray(X, dtype=np.float64)
    norms = np.linalg.norm(A, axis=-1, keepdims=True)
    return A / np.where(norms > 0.0, norms, 1.0)


# ---------------------------------------------------------------------------
# Backend: centring, LDA, WCCN, length normalisation
# ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Backend:
    """Affine projection then optional length normalisation, fitted on labelled i-vectors.

    ``transform(X) = ln((X - mean) @ projection)`` where ``ln`` is row-wise normalisation to
    unit length when ``length_norm`` is true.

    Attributes
    ----------
    mean : ndarray, shape (d_in,), float64
        Training mean.
    projection : ndarray, shape (d_in, d_out), float64
        LDA (when used) followed by the WCCN whitening (when used); the identity otherwise.
    lda_dim : int or None
        Output dimension of LDA, ``None`` when LDA was not used.
    wccn : bool
        Whether WCCN is part of ``projection``.
    length_norm : bool
        Normalise outputs to unit length.
    """

    mean: FloatArray
    projection: FloatArray
    lda_dim: int | None = None
    wccn: bool = True
    length_norm: bool = True

    @property
    def dim(self) -> int:
        """Output dimension ``d_out``."""
        return int(self.projection.shape[1])

    @classmethod
    def fit(
        cls,
        X: FloatArray,
        labels: Sequence[str],
        *,
        lda_dim: int | None = None,
        wccn: bool = True,
        length_norm: bool = True,
    ) -> Backend:
        """Fit centring, LDA, WCCN on speaker-labelled vectors.

        Parameters
        ----------
        X : ndarray, shape (n, d), float
            Training i-vectors.
        labels : sequence of str, length n
            Speaker of each row.
        lda_dim : int, optional
            Keep this many LDA dimensions (at most ``min(d, n_speakers - 1)``); ``None``
            skips LDA.
        wccn : bool, default True
            Whiten the within-class covariance (after LDA).
        length_norm : bool, default True
            Normalise transformed vectors to unit length.

        Returns
        -------
        Backend

        Raises
        ------
        DataError
            Bad shapes, NaN, fewer than 2 speakers, singular scatter matrices.
        ConfigError
            ``lda_dim`` out of range.
        """
        X = _as_matrix(X, "back-end training i-vectors")
        names, idx = _labels_index(labels, X.shape[0])
        n, d = X.shape
        if len(names) < 2:
            raise DataError(f"back-end training needs at least 2 speakers, got {len(names)}")
        mean = X.mean(axis=0)
        Xc = X - mean
        counts, sums = _class_sums(Xc, idx, len(names))
        P = np.eye(d)
        if lda_dim is not None:
            if not 1 <= lda_dim <= min(d, len(names) - 1):
                raise ConfigError(
                    f"lda_dim must be in 1..{min(d, len(names) - 1)} (i-vector dimension {d}, "
                    f"{len(names)} training speakers), got {lda_dim}"
                )
            Sw = _within_scatter(Xc, idx, counts, sums) / n
            class_means = sums / counts[:, None]
            Sb = (class_means * counts[:, None]).T @ class_means / n
            _chol(Sw, "the LDA within-class scatter")
            evals, evecs = scipy.linalg.eigh((Sb + Sb.T) / 2.0, (Sw + Sw.T) / 2.0)
            order = np.argsort(evals)[::-1][:lda_dim]
            P = evecs[:, order]
        if wccn:
            Y = Xc @ P
            cy, sy = _class_sums(Y, idx, len(names))
            W = _within_scatter(Y, idx, cy, sy) / n
            C = _chol(W, "the WCCN within-class covariance")
            P = scipy.linalg.solve_triangular(C, P.T, lower=True).T
        logger.info(
            "back end fitted on %d vectors of %d speakers: %d -> %d dims (lda=%s, wccn=%s, length_norm=%s)",
            n,
            len(names),
            d,
            P.shape[1],
            lda_dim,
            wccn,
            length_norm,
        )
        return cls(mean=mean, projection=P, lda_dim=lda_dim, wccn=wccn, length_norm=length_norm)

    def transform(self, X: FloatArray) -> FloatArray:
        """Apply the back end.

        Parameters
        ----------
        X : ndarray, shape (n, d_in), float

        Returns
        -------
        ndarray, shape (n, d_out), float64
        """
        A = _as_matrix(X, "i-vectors")
        if A.shape[1] != self.mean.shape[0]:
            raise DataError(
                f"i-vectors have {A.shape[1]} dimensions, the back end expects {self.mean.shape[0]}"
            )
        Y = (A - self.mean) @ self.projection
        return length_normalize(Y) if self.length_norm else Y

    def save(self, path: PathLike) -> None:
        """Write to HDF5 atomically (datasets ``mean``, ``projection``; options as attributes)."""
        write_h5(
            path,
            _BACKEND_FORMAT,
            {"mean": self.mean, "projection": self.projection},
            {
                "lda_dim": -1 if self.lda_dim is None else int(self.lda_dim),
                "wccn": bool(self.wccn),
                "length_norm": bool(self.length_norm),
            },
        )

    @classmethod
    def load(cls, path: PathLike) -> Backend:
        """Read a file written by :meth:`save`; a bad file is a ModelError naming it."""
        arrays, attrs = read_h5(path, _BACKEND_FORMAT, ("mean", "projection"))
        mean = np.asarray(arrays["mean"], dtype=np.float64)
        proj = np.asarray(arrays["projection"], dtype=np.float64)
        if mean.ndim != 1 or proj.ndim != 2 or proj.shape[0] != mean.shape[0]:
            raise ModelError(f"{path}: inconsistent shapes mean {mean.shape}, projection {proj.shape}")
        lda = int(attrs.get("lda_dim", -1))
        return cls(
            mean=mean,
            projection=proj,
            lda_dim=None if lda < 0 else lda,
            wccn=bool(attrs.get("wccn", True)),
            length_norm=bool(attrs.get("length_norm", True)),
        )


# ---------------------------------------------------------------------------
# Two-covariance PLDA
# ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PLDA:
    """Two-covariance PLDA: ``y ~ N(mean, between)``, ``x | y ~ N(y, within)``.

    Attributes
    ----------
    mean : ndarray, shape (d,), float64
        Mean of the speaker variable.
    between : ndarray, shape (d, d), float64
        Between-speaker covariance (inverse of the precision ``B``).
    within : ndarray, shape (d, d), float64
        Within-speaker covariance (inverse of the precision ``W``).
    history : tuple of float
        Training log-likelihood (nats, summed over speakers) after each EM iteration
        (entry 0: the initial estimate).
    """

    mean: FloatArray
    between: FloatArray
    within: FloatArray
    history: tuple[float, ...] = field(default=())

    @property
    def dim(self) -> int:
        """Dimension ``d``."""
        return int(self.mean.shape[0])

    # -- training ---------------------------------------------------------------
    @classmethod
    def fit(cls, X: FloatArray, labels: Sequence[str], *, iterations: int = 10) -> PLDA:
        """Train by EM with speaker labels (Sizov, Lee and Kinnunen 2014).

        The speaker variables are the hidden data. Initialisation: ``mean`` the global
        mean, ``within`` the pooled within-class covariance, ``between`` the covariance of
        the class means. Each iteration cannot lower the log-likelihood of the training
        vectors (the EM property; recorded in ``history``). Speakers with the same number
        of vectors share their posterior precision, so the E-step is one Cholesky per
        distinct count and matrix products over the speakers.

        Parameters
        ----------
        X : ndarray, shape (n, d), float
            Training vectors (usually after :class:`Backend`).
        labels : sequence of str, length n
            Speaker of each row.
        iterations : int, default 10
            EM iterations (0 keeps the initial estimate).

        Returns
        -------
        PLDA

        Raises
        ------
        DataError
            Fewer than 2 speakers, bad arrays, singular covariances.
        """
        if iterations < 0:
            raise ConfigError(f"PLDA iterations must not be negative, got {iterations}")
        X = _as_matrix(X, "PLDA training vectors")
        names, idx = _labels_index(labels, X.shape[0])
        n, d = X.shape
        S = len(names)
        if S < 2:
            raise DataError(f"PLDA training needs at least 2 speakers, got {S}")
        counts, sums = _class_sums(X, idx, S)
        if np.all(counts == 1):
            raise DataError("PLDA training needs at least one speaker with 2 or more vectors")
        mean = X.mean(axis=0)
        class_means = sums / counts[:, None]
        within = _within_scatter(X, idx, counts, sums) / n
        dm = class_means - mean
        between = dm.T @ dm / S
        # a between-speaker covariance of rank < d (few speakers): ridge it to full rank
        between = between + np.eye(d) * max(1e-6 * np.trace(between) / d, 1e-12)
        second = X.T @ X  # sum_i x_i x_i'
        model = cls(mean=mean, between=between, within=within)
        history = [model._loglik(counts, sums, second, n)]
        for _ in range(iterations):
            model = model._em_step(counts, sums, second, n)
            history.append(model._loglik(counts, sums, second, n))
        drops = np.diff(history)
        if drops.size and drops.min() < -1e-6 * max(1.0, abs(history[0])):
            logger.warning("PLDA EM: log-likelihood dropped by %.3g (numerical trouble)", -drops.min())
        logger.info(
            "PLDA trained on %d vectors of %d speakers (d=%d, %d iterations): log-likelihood %.6g -> %.6g",
            n,
            S,
            d,
            iterations,
            history[0],
            history[-1],
        )
        return cls(mean=model.mean, between=model.between, within=model.within, history=tuple(history))

    def _precisions(self) -> tuple[FloatArray, FloatArray]:
        return (
            _spd_inverse(self.between, "the PLDA between-speaker covariance"),
            _spd_inverse(self.within, "the PLDA within-speaker covariance"),
        )

    def _posterior_groups(self, counts: FloatArray, B: FloatArray, W: FloatArray) -> dict[float, FloatArray]:
        """Lower Cholesky factor of the posterior precision ``B + n W`` per distinct ``n``."""
        return {float(c): _chol(B + c * W, "the PLDA posterior precision") for c in np.unique(counts)}

    def _em_step(self, counts: FloatArray, sums: FloatArray, second: FloatArray, n: int) -> PLDA:
        B, W = self._precisions()
        S, d = sums.shape
        Bmu = B @ self.mean
        rhs = Bmu[None, :] + sums @ W  # (S, d): B mu + W f_s   (W symmetric)
        post_mean = np.empty_like(sums)
        cov_sum_between = np.zeros((d, d))  # sum_s L_s^-1
        cov_sum_within = np.zeros((d, d))  # sum_s n_s L_s^-1
        for c, C in self._posterior_groups(counts, B, W).items():
            rows = np.flatnonzero(counts == c)
            post_mean[rows] = scipy.linalg.cho_solve((C, True), rhs[rows].T).T
            Linv = scipy.linalg.cho_solve((C, True), np.eye(d))
            cov_sum_between += rows.size * Linv
            cov_sum_within += rows.size * c * Linv
        mean = post_mean.mean(axis=0)
        between = (cov_sum_between + post_mean.T @ post_mean) / S - np.outer(mean, mean)
        cross = sums.T @ post_mean  # sum_s f_s m_s'
        within = (second - cross - cross.T + cov_sum_within + (post_mean * counts[:, None]).T @ post_mean) / n
        return PLDA(mean=mean, between=(between + between.T) / 2.0, within=(within + within.T) / 2.0)

    def _loglik(self, counts: FloatArray, sums: FloatArray, second: FloatArray, n: int) -> float:
        """Marginal log-likelihood of the training vectors, summed over speakers (nats)."""
        B, W = self._precisions()
        d = self.dim
        Cb = _chol(self.between, "the PLDA between-speaker covariance")
        Cw = _chol(self.within, "the PLDA within-speaker covariance")
        logdet_B = -_logdet_chol(Cb)
        logdet_W = -_logdet_chol(Cw)
        Bmu = B @ self.mean
        rhs = Bmu[None, :] + sums @ W
        total = -0.5 * n * d * _LOG_2PI + 0.5 * n * logdet_W - 0.5 * float(np.sum(W * second))
        total += len(counts) * (0.5 * logdet_B - 0.5 * float(self.mean @ Bmu))
        for c, C in self._posterior_groups(counts, B, W).items():
            rows = np.flatnonzero(counts == c)
            z = scipy.linalg.solve_triangular(C, rhs[rows].T, lower=True)
            total += -0.5 * rows.size * _logdet_chol(C) + 0.5 * float(np.sum(z * z))
        return float(total)

    # -- scoring ----------------------------------------------------------------
    def score(self, enroll: Sequence[FloatArray], test: FloatArray) -> FloatArray:
        """Multi-enrolment log-likelihood ratios of every model against every test vector.

        For a model with enrolment vectors ``E`` (``n`` of them, sum ``f``) and a test
        vector ``t`` the LLR is ``log p(E, t) - log p(E) - log p(t)``: same speaker
        against different speakers. In closed form, with ``b(g) = B mean + W g`` and
        ``L_k = B + k W``,

        ``LLR = c_n + b(f + t)' L_{n+1}^-1 b(f + t) / 2 - b(f)' L_n^-1 b(f) / 2 - b(t)' L_1^-1 b(t) / 2``

        with ``c_n = (log|L_n| + log|L_1| - log|L_{n+1}| - log|B| + mean' B mean) / 2``.
        Models are grouped by ``n``; within a group every model-test pair comes from one
        matrix product (no loop over test vectors).

        Parameters
        ----------
        enroll : sequence of ndarray, each shape (n_i, d)
            All enrolment vectors of each model.
        test : ndarray, shape (m, d)
            Test vectors.

        Returns
        -------
        ndarray, shape (len(enroll), m), float64
            Natural-log likelihood ratios.
        """
        T = _as_matrix(test, "PLDA test vectors")
        d = self.dim
        if T.shape[1] != d:
            raise DataError(f"test vectors have {T.shape[1]} dimensions, the PLDA model has {d}")
        E = [_as_matrix(e, f"enrolment vectors of model {i}") for i, e in enumerate(enroll)]
        for i, e in enumerate(E):
            if e.shape[1] != d:
                raise DataError(f"enrolment vectors of model {i} have {e.shape[1]} dimensions, PLDA has {d}")
        M = len(E)
        out = np.empty((M, T.shape[0]))
        if M == 0:
            return out
        B, W = self._precisions()
        Cb = _chol(self.between, "the PLDA between-speaker covariance")
        logdet_B = -_logdet_chol(Cb)
        Bmu = B @ self.mean
        counts = np.array([e.shape[0] for e in E], dtype=np.float64)
        sums = np.stack([e.sum(axis=0) for e in E])
        chol: dict[float, FloatArray] = {}
        for c in {1.0, *counts.tolist(), *(counts + 1).tolist()}:
            chol[c] = _chol(B + c * W, "the PLDA posterior precision")
        c_t = T @ W  # (m, d): W t
        # test-only term: b(t)' L_1^-1 b(t)
        z1 = scipy.linalg.solve_triangular(chol[1.0], (Bmu[None, :] + c_t).T, lower=True)
        q_test_alone = np.sum(z1 * z1, axis=0)  # (m,)
        for c in np.unique(counts):
            rows = np.flatnonzero(counts == c)
            bE = Bmu[None, :] + sums[rows] @ W  # (g, d)
            zn = scipy.linalg.solve_triangular(chol[float(c)], bE.T, lower=True)
            q_enroll_alone = np.sum(zn * zn, axis=0)  # (g,)
            C1 = chol[float(c) + 1.0]
            zE = scipy.linalg.solve_triangular(C1, bE.T, lower=True)  # (d, g)
            zT = scipy.linalg.solve_triangular(C1, c_t.T, lower=True)  # (d, m)
            q_joint = np.sum(zE * zE, axis=0)[:, None] + 2.0 * (zE.T @ zT) + np.sum(zT * zT, axis=0)[None, :]
            const = 0.5 * (
                _logdet_chol(chol[float(c)])
                + _logdet_chol(chol[1.0])
                - _logdet_chol(C1)
                - logdet_B
                + float(self.mean @ Bmu)
            )
            out[rows] = const + 0.5 * (q_joint - q_enroll_alone[:, None] - q_test_alone[None, :])
        return out

    # -- persistence ------------------------------------------------------------
    def save(self, path: PathLike) -> None:
        """Write to HDF5 atomically (datasets ``mean``, ``between``, ``within``, ``history``)."""
        write_h5(
            path,
            _PLDA_FORMAT,
            {
                "mean": self.mean,
                "between": self.between,
                "within": self.within,
                "history": np.asarray(self.history, dtype=np.float64),
            },
            {},
        )

    @classmethod
    def load(cls, path: PathLike) -> PLDA:
        """Read a file written by :meth:`save`; a bad file is a ModelError naming it."""
        arrays, _ = read_h5(path, _PLDA_FORMAT, ("mean", "between", "within"))
        mean = np.asarray(arrays["mean"], dtype=np.float64)
        d = mean.shape[0] if mean.ndim == 1 else -1
        for k in ("between", "within"):
            if np.asarray(arrays[k]).shape != (d, d):
                raise ModelError(f"{path}: {k} has shape {np.asarray(arrays[k]).shape}, expected ({d}, {d})")
        hist = tuple(float(h) for h in np.asarray(arrays.get("history", np.zeros(0))).ravel())
        return cls(
            mean=mean,
            between=np.asarray(arrays["between"], dtype=np.float64),
            within=np.asarray(arrays["within"], dtype=np.float64),
            history=hist,
        )


def cosine_scores(enroll: Sequence[FloatArray], test: FloatArray) -> FloatArray:
    """Cosine similarity of each model's mean enrolment vector with each test vector.

    Parameters
    ----------
    enroll : sequence of ndarray, each shape (n_i, d)
        Enrolment vectors of each model (averaged after length normalisation).
    test : ndarray, shape (m, d)

    Returns
    -------
    ndarray, shape (len(enroll), m), float64, in [-1, 1].
    """
    T = _as_matrix(test, "cosine test vectors")
    if len(enroll) == 0:
        return np.empty((0, T.shape[0]))
    models = np.stack(
        [
            length_normalize(_as_matrix(e, f"enrolment vectors of model {i}")).mean(axis=0)
            for i, e in enumerate(enroll)
        ]
    )
    if models.shape[1] != T.shape[1]:
        raise DataError(f"enrolment vectors have {models.shape[1]} dimensions, test vectors {T.shape[1]}")
    return length_normalize(models) @ length_normalize(T).T
