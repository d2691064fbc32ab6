"""The Gaussian mixture model: parameters, scoring, sampling, criteria and HDF5 persistence.

Training (EM) lives in :mod:`gmmspeaker.gmm.em`; the E-step maths in
:mod:`gmmspeaker.gmm.stats`. This module holds the object that carries a fitted model.
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gmmspeaker._io import atomic_h5
from gmmspeaker._typing import FloatArray, IntArray, PathLike
from gmmspeaker.errors import ConfigError, DataError, ModelError, NotFittedError
from gmmspeaker.gmm.kernel import blocks, posteriors
from gmmspeaker.gmm.params import COVARIANCE_TYPES, MixtureParams, covariance_shape, n_free_parameters
from gmmspeaker.gmm.stats import frame_loglik, log_densities

if TYPE_CHECKING:
    from gmmspeaker.gmm.em import EMResult

__all__ = ["GaussianMixture", "INITS", "PARAM_CONSTRAINTS", "Constraint"]

logger = logging.getLogger(__name__)

INITS = ("kmeans++", "random", "split")
_FORMAT = "gmmspeaker.GaussianMixture"
#: Stored config keys that load() does not pass to the constructor (the first three are
#: read from the arrays or meaningless after training; the rest belong to the machine).
_NOT_RESTORED = ("n_components", "covariance_type", "init", "n_jobs", "checkpoint", "progress")
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class Constraint:
    """What one constructor option of :class:`GaussianMixture` may be.

    ``kind`` is one of ``"int"`` (an integer >= ``low``), ``"real"`` (a finite number >=
    ``low``), ``"choice"`` (one of ``choices``), ``"dtype"`` (a float32 or float64 dtype),
    ``"seed"`` (an int or a numpy Generator), ``"jobs"`` (a positive int or -1), ``"path"``
    and ``"bool"``; ``none_ok`` also admits None. :meth:`problem` is what both
    ``GaussianMixture.fit`` and the recipe validator (``ubm:`` section) call.
    """

    kind: str
    low: float | None = None
    choices: tuple[str, ...] = ()
    none_ok: bool = False

    def describe(self) -> str:
        """The rule as the end of a sentence: ``"must be positive"``, ``"must be one of a, b"``."""
        if self.kind == "int":
            return "must be positive" if self.low == 1 else f"must be an integer >= {self.low:g}"
        if self.kind == "real":
            return "must not be negative" if self.low == 0 else f"must be a number >= {self.low:g}"
        if self.kind in ("choice", "dtype"):
            opts = ", ".join(self.choices)
            return f"must be one of {opts}" + (" or None" if self.none_ok else "")
        return {
            "seed": "must be None, an int or a numpy Generator",
            "jobs": "must be a positive integer or -1",
            "path": "must be None or a path",
            "bool": "must be true or false",
        }[self.kind]

    def problem(self, value: Any) -> str | None:
        """None if ``value`` satisfies the rule, else the rule (see :meth:`describe`)."""
        if value is None:
            return None if self.none_ok else self.describe()
        k = self.kind
        is_int = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
        if k == "int":
            ok = is_int and (self.low is None or value >= self.low)
        elif k == "real":
            ok = (
                isinstance(value, (int, float, np.integer, np.floating))
                and not isinstance(value, (bool, np.bool_))
                and bool(np.isfinite(value))
                and (self.low is None or value >= self.low)
            )
        elif k == "choice":
            ok = isinstance(value, str) and value in self.choices
        elif k == "dtype":
            try:
                ok = np.dtype(value).name in self.choices
            except TypeError:
                ok = False
        elif k == "seed":
            ok = is_int or isinstance(value, np.random.Generator)
        elif k == "jobs":
            ok = is_int and (value >= 1 or value == -1)
        elif k == "path":
            ok = isinstance(value, (str, os.PathLike))
        else:  # bool
            ok = isinstance(value, (bool, np.bool_))
        return None if ok else self.describe()


#: The constraints of every constructor option of :class:`GaussianMixture` (one table: ``fit``
#: validates with it and the recipe validator checks the ``ubm:`` keys against it).
#: ``init`` may also be a fitted GaussianMixture (a warm start), checked in ``fit``.
PARAM_CONSTRAINTS: dict[str, Constraint] = {
    "n_components": Constraint("int", low=1),
    "covariance_type": Constraint("choice", choices=COVARIANCE_TYPES),
    "init": Constraint("choice", choices=INITS),
    "n_init": Constraint("int", low=1),
    "max_iter": Constraint("int", low=0),
    "tol": Constraint("real", low=0),
    "variance_floor": Constraint("real", low=0),
    "variance_floor_abs": Constraint("real", low=0),
    "min_weight": Constraint("real", low=0),
    "dtype": Constraint("dtype", choices=("float32", "float64"), none_ok=True),
    "chunk_size": Constraint("int", low=1),
    "random_state": Constraint("seed", none_ok=True),
    "n_jobs": Constraint("jobs"),
    "checkpoint": Constraint("path", none_ok=True),
    "progress": Constraint("bool"),
}


def validate_params(
    weights: Any, means: Any, covariances: Any, covariance_type: str, *, where: str
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Check mixture parameters; return them as float64 arrays or raise :class:`ModelError`.

    Rules: weights (K,) non-negative, finite, summing to 1 (within 1e-6); means (K, D) finite;
    covariances of the shape of ``covariance_type`` with positive variances (full and tied:
    positive-definite, checked by Cholesky). ``where`` names the file or call in the message.
    """
    if covariance_type not in COVARIANCE_TYPES:
        raise ModelError(
            f"{where}: unknown covariance_type {covariance_type!r}; expected one of {COVARIANCE_TYPES}"
        )
    try:
        w = np.asarray(weights, dtype=np.float64)
        mu = np.asarray(means, dtype=np.float64)
        cov = np.asarray(covariances, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{where}: parameters are not numeric arrays ({exc})") from exc
    if mu.ndim != 2 or mu.shape[0] < 1 or mu.shape[1] < 1:
        raise ModelError(f"{where}: means must have shape (K, D), got {mu.shape}")
    K, D = mu.shape
    if w.shape != (K,):
        raise ModelError(f"{where}: weights must have shape ({K},) to match means {mu.shape}, got {w.shape}")
    expected = covariance_shape(covariance_type, K, D)
    if cov.shape != expected:
        raise ModelError(
            f"{where}: {covariance_type} covariances must have shape {expected}, got {cov.shape}"
        )
    for name, arr in (("weights", w), ("means", mu), ("covariances", cov)):
        if not np.isfinite(arr).all():
            raise ModelError(f"{where}: {name} contain NaN or inf")
    if (w < 0).any():
        raise ModelError(f"{where}: weights must be non-negative (min {w.min():.3g})")
    if abs(w.sum() - 1.0) > 1e-6:
        raise ModelError(f"{where}: weights must sum to 1, they sum to {w.sum():.9g}")
    if covariance_type in ("diag", "spherical"):
        if (cov <= 0).any():
            raise ModelError(f"{where}: variances must be positive (min {cov.min():.3g})")
    else:
        if not np.allclose(cov, np.swapaxes(cov, -1, -2), rtol=1e-8, atol=1e-12):
            raise ModelError(f"{where}: {covariance_type} covariance matrices must be symmetric")
        try:
            np.linalg.cholesky(cov)
        except np.linalg.LinAlgError:
            raise ModelError(
                f"{where}: a {covariance_type} covariance matrix is not positive definite"
            ) from None
    return w, mu, cov


def as_frames(X: Any, *, n_features: int | None = None, check_finite: bool = False) -> np.ndarray:
    """X as a 2-D real array of frames, or a :class:`DataError` (a ``ValueError``) saying why not.

    Integer and object arrays of numbers become float64. Refused, with the wording scikit-learn's
    checks look for: sparse matrices, complex numbers, a 1-D array ("Reshape your data"), zero
    features, a feature count other than ``n_features`` and, with ``check_finite``, NaN or inf.
    """
    if hasattr(X, "toarray") and hasattr(X, "nnz"):
        raise DataError("X: sparse input is not supported; pass a dense array (X.toarray())")
    try:
        X = np.asarray(X)
    except (TypeError, ValueError) as exc:
        raise DataError(f"X: cannot be read as an array ({exc})") from exc
    if X.dtype.kind == "c":
        raise DataError("X: Complex data not supported; pass real-valued frames")
    if X.dtype.kind == "O":
        try:  # a TypeError (an element that is no number nor string) is numpy's, unchanged
            X = X.astype(np.float64)
        except ValueError as exc:
            raise DataError(f"X: an object array that is not numeric ({exc})") from exc
    if X.dtype.kind not in "fiub":
        raise DataError(f"X: expected numeric frames, got dtype {X.dtype}")
    if X.ndim != 2:
        raise DataError(
            f"X: expected a 2-D (frames, dims) array, got shape {X.shape}. Reshape your data with "
            "X.reshape(-1, 1) if it has one feature or X.reshape(1, -1) if it is one frame"
        )
    if X.shape[1] == 0:
        raise DataError(f"X: 0 feature(s) (shape={X.shape}) while a minimum of 1 is required.")
    if n_features is not None and X.shape[1] != n_features:
        raise DataError(
            f"X has {X.shape[1]} features, but GaussianMixture is expecting {n_features} features as input"
        )
    if X.dtype.kind != "f":
        X = X.astype(np.float64)
    if check_finite and not np.isfinite(X).all():
        row = int(np.flatnonzero(~np.isfinite(X).all(axis=1))[0])
        raise DataError(f"X: row {row}: NaN or inf")
    return X


class GaussianMixture:
    """Gaussian mixture density trained with EM: a scikit-learn estimator.

    It follows scikit-learn's grammar without importing it: parameters from the
    ``__init__`` signature (``get_params`` / ``set_params``, validated in ``fit`` against
    :data:`PARAM_CONSTRAINTS`), ``fit(X, y=None)`` returning ``self``, ``fit_predict``, fitted
    state in attributes ending in ``_``. So ``sklearn.base.clone``, ``Pipeline``,
    ``GridSearchCV`` and ``cross_val_score`` (which uses :meth:`score`, the mean
    log-likelihood per frame) work with it.

    Parameters
    ----------
    n_components : int
        Number of Gaussian components K.
    covariance_type : {"diag", "full", "spherical", "tied"}
        Shape of the covariances: (K, D), (K, D, D), (K,), (D, D).
    init : {"kmeans++", "random", "split"} or GaussianMixture
        Initialisation. ``"kmeans++"``: k-means++ seeds on a uniform subsample of the
        frames, then one hard-assignment M-step. ``"random"``: K random frames as means,
        the global variance, equal weights. ``"split"``: binary splitting 1 -> 2 -> 4 ... -> K
        with EM at each size (deterministic). A fitted GaussianMixture: start from its
        parameters (warm start; needs ``n_init == 1``).
    n_init : int
        Restarts; the run with the best final log-likelihood is kept.
    max_iter : int
        EM iterations of the final run (the split levels run at most 10 each).
    tol : float
        Convergence threshold on the change of the mean log-likelihood per frame.
    variance_floor : float
        Variance floor relative to the global (data) variance of each dimension.
    variance_floor_abs : float
        Absolute variance floor (also protects constant dimensions).
    min_weight : float
        A component whose weight falls below this (or that loses all its frames) is
        re-seeded by splitting the heaviest component, with a logged warning.
    dtype : {None, "float32", "float64"}
        Precision of the heavy products; None = float32 for diag/spherical, float64 for
        full/tied. Statistics are always accumulated in float64.
    chunk_size : int
        Frames per E-step block: memory is O(chunk_size x K), never O(n_frames x K).
    random_state : int, numpy Generator or None
        Seed of every random choice (subsample, seeds, restarts).
    n_jobs : int
        Workers: threads over chunks for :meth:`fit`, processes (joblib) over sources for
        :meth:`fit_stream`; -1 = the CPUs this process may use (affinity and container
        limits, ``joblib.cpu_count()``). Results do not depend on it. Not saved with the model.
    checkpoint : path-like or None
        HDF5 file written after every EM iteration; a later fit with the same settings and
        data resumes from it. Removed when the fit completes.
    progress : bool
        Show a tqdm progress bar (on stderr) advancing per EM iteration with the current
        mean log-likelihood per frame. Off by default; like ``n_jobs`` and ``checkpoint``
        it is a setting of the run, not saved with the model.

    Attributes
    ----------
    weights_ : ndarray (K,), means_ : ndarray (K, D), covariances_ : ndarray
    n_features_in_ : int
        Feature dimension D.
    converged_ : bool
    n_iter_ : int
        EM iterations of the kept run (final size, after splitting).
    lower_bound_ : float
        Mean log-likelihood per frame at the last E-step of the kept run.
    history_ : list of float
        Mean log-likelihood per frame at every EM iteration of the kept run.
    split_history_ : list of tuple (int, float)
        (size, mean log-likelihood) of the EM iterations run while splitting.
    variance_floor_ : ndarray (D,)
        The absolute per-dimension floor that was applied.
    n_reseeded_ : int
        Number of degenerate components re-seeded during the kept run.
    """

    def __init__(
        self,
        n_components: int = 1,
        *,
        covariance_type: str = "diag",
        init: str | GaussianMixture = "kmeans++",
        n_init: int = 1,
        max_iter: int = 100,
        tol: float = 1e-3,
        variance_floor: float = 1e-3,
        variance_floor_abs: float = 1e-6,
        min_weight: float = 1e-5,
        dtype: str | None = None,
        chunk_size: int = 20000,
        random_state: int | np.random.Generator | None = None,
        n_jobs: int = 1,
        checkpoint: PathLike | None = None,
        progress: bool = False,
    ) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.variance_floor = variance_floor
        self.variance_floor_abs = variance_floor_abs
        self.min_weight = min_weight
        self.dtype = dtype
        self.chunk_size = chunk_size
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.checkpoint = checkpoint
        self.progress = progress

    # -- configuration ------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """The model's constructor options as JSON-friendly values (a Generator seed becomes None).

        Settings of the machine or the run -- ``n_jobs``, ``checkpoint``, ``progress`` --
        are not part of it: they are not saved into a model file nor restored on load.
        """
        init = self.init if isinstance(self.init, str) else "given"
        rs = self.random_state if isinstance(self.random_state, (int, np.integer)) else None
        return {
            "n_components": int(self.n_components),
            "covariance_type": self.covariance_type,
            "init": init,
            "n_init": int(self.n_init),
            "max_iter": int(self.max_iter),
            "tol": float(self.tol),
            "variance_floor": float(self.variance_floor),
            "variance_floor_abs": float(self.variance_floor_abs),
            "min_weight": float(self.min_weight),
            "dtype": None if self.dtype is None else str(np.dtype(self.dtype)),
            "chunk_size": int(self.chunk_size),
            "random_state": None if rs is None else int(rs),
        }

    @classmethod
    def _get_param_names(cls) -> list[str]:
        """The constructor's parameter names, from its signature (as scikit-learn reads them)."""
        sig = inspect.signature(cls.__init__)
        return sorted(n for n, p in sig.parameters.items() if n != "self" and p.kind != p.VAR_KEYWORD)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor parameters and their current values (scikit-learn's ``get_params``).

        ``deep`` is accepted for compatibility; no parameter is itself an estimator whose
        parameters are reported (a warm-start ``init`` model is returned as it is).
        """
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params: Any) -> GaussianMixture:
        """Set constructor parameters (validated at the next ``fit``, as in scikit-learn).

        Raises
        ------
        ConfigError
            A name that is not a constructor parameter (a ``ValueError``, as scikit-learn raises).
        """
        valid = self._get_param_names()
        for name, value in params.items():
            if name not in valid:
                raise ConfigError(
                    f"GaussianMixture: invalid parameter {name!r} for set_params (valid: {', '.join(valid)})"
                )
            setattr(self, name, value)
        return self

    def __sklearn_clone__(self) -> GaussianMixture:
        """An unfitted copy with the same parameters (what ``sklearn.base.clone`` calls).

        Parameters are deep-copied as scikit-learn does, except a fitted ``init`` model (a
        warm start), which is shared: cloning it the scikit-learn way would drop its fit.
        """
        params = {
            k: v if isinstance(v, GaussianMixture) else copy.deepcopy(v)
            for k, v in self.get_params(deep=False).items()
        }
        return type(self)(**params)

    def __sklearn_tags__(self) -> Any:
        """scikit-learn's estimator tags (only scikit-learn calls this, so it imports it here)."""
        from sklearn.utils import Tags, TargetTags

        return Tags(
            estimator_type="density_estimator",
            target_tags=TargetTags(required=False),
            transformer_tags=None,
            regressor_tags=None,
            classifier_tags=None,
        )

    def __sklearn_is_fitted__(self) -> bool:
        return getattr(self, "means_", None) is not None

    def _validate_config(self) -> None:
        """Check the options once, at the start of ``fit``, against :data:`PARAM_CONSTRAINTS`."""
        for name, rule in PARAM_CONSTRAINTS.items():
            value = getattr(self, name)
            if name == "init" and isinstance(value, GaussianMixture):
                if not value.__sklearn_is_fitted__():
                    raise ConfigError("GaussianMixture: init is a GaussianMixture that is not fitted")
                if self.n_init != 1:
                    raise ConfigError(
                        "GaussianMixture: a given initial model (init=GaussianMixture) needs n_init=1"
                    )
                continue
            problem = rule.problem(value)
            if problem is not None:
                extra = " or a fitted GaussianMixture" if name == "init" else ""
                raise ConfigError(f"GaussianMixture: {name} {problem}{extra}, got {value!r}")
        if self.min_weight * self.n_components >= 1:
            raise ConfigError(
                f"GaussianMixture: min_weight={self.min_weight} is too large for {self.n_components} "
                "components (needs < 1/K)"
            )

    # -- training -----------------------------------------------------------------------
    def fit(self, X: FloatArray, y: Any = None) -> GaussianMixture:
        """Fit the mixture to in-memory frames.

        Parameters
        ----------
        X : ndarray, shape (n_frames, D), float32 or float64
            Frames as rows; must be finite, with at least ``n_components`` frames.
        y : ignored
            Accepted so that the model fits in scikit-learn pipelines and searches.

        Returns
        -------
        self

        Raises
        ------
        DataError
            Empty input, NaN/inf, fewer frames than components.
        ConfigError
            Invalid options.
        """
        from gmmspeaker.gmm.em import fit_array

        self._validate_config()
        self._apply(fit_array(self, as_frames(X)))
        return self

    def fit_predict(self, X: FloatArray, y: Any = None) -> IntArray:
        """Fit on X, then return the most probable component of each frame (int64, (n_frames,))."""
        return self.fit(X).predict(X)

    def fit_stream(self, sources: Sequence[Callable[[], Iterable[np.ndarray]]]) -> GaussianMixture:
        """Fit on data larger than memory, streamed from chunk sources.

        Parameters
        ----------
        sources : sequence of zero-argument callables
            Each returns an iterable of (n, D) chunks when called (it is called once per
            pass over the data); it must be picklable for ``n_jobs > 1`` (e.g. a
            ``functools.partial`` of a module-level function, or ``FeatureStore.sources()``).
            One joblib task per source per EM iteration; the statistics are summed in
            source order, so ``n_jobs`` does not change the result. A source may declare
            the number of frames it yields as an int attribute ``n_frames`` (store sources
            do): when all do, the first pass keeps only each source's share of the
            initialisation subsample (memory flat in the number of sources; the same
            model), and a source yielding another number is a DataError.

        Returns
        -------
        self
        """
        from gmmspeaker.gmm.em import fit_sources

        self._validate_config()
        self._apply(fit_sources(self, sources))
        return self

    def _apply(self, result: EMResult) -> None:
        """Take the fitted parameters and the training trace of an EM run."""
        self._set_params(result.params)
        self.converged_ = result.converged
        self.n_iter_ = result.n_iter
        self.lower_bound_ = result.lower_bound
        self.history_ = list(result.history)
        self.split_history_ = list(result.split_history)
        self.variance_floor_ = result.variance_floor
        self.n_reseeded_ = result.n_reseeded
        self.n_frames_ = result.n_frames

    # -- fitted state -------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if getattr(self, "means_", None) is None:
            raise NotFittedError(
                "this GaussianMixture is not fitted yet; call fit, fit_stream, load or from_params"
            )

    def to_params(self) -> MixtureParams:
        """The fitted parameters as :class:`~gmmspeaker.gmm.stats.MixtureParams` (float64).

        Raises
        ------
        ModelError
            The model is not fitted.
        """
        self._check_fitted()
        return MixtureParams(self.weights_, self.means_, self.covariances_, self.covariance_type)

    def _set_params(self, params: MixtureParams) -> None:
        self.weights_ = np.asarray(params.weights, dtype=np.float64)
        self.means_ = np.asarray(params.means, dtype=np.float64)
        self.covariances_ = np.asarray(params.covariances, dtype=np.float64)
        self.n_features_in_ = int(self.means_.shape[1])

    @classmethod
    def from_params(
        cls,
        weights: FloatArray,
        means: FloatArray,
        covariances: FloatArray,
        *,
        covariance_type: str = "diag",
        **options: Any,
    ) -> GaussianMixture:
        """A fitted model from arrays (validated; raises :class:`ModelError`).

        ``options`` are constructor keywords (e.g. ``dtype``); ``n_components`` is taken
        from the arrays.
        """
        w, mu, cov = validate_params(weights, means, covariances, covariance_type, where="from_params")
        gmm = cls(mu.shape[0], covariance_type=covariance_type, **options)
        gmm._set_params(MixtureParams(w, mu, cov, covariance_type))
        gmm.converged_ = True
        gmm.n_iter_ = 0
        gmm.lower_bound_ = float("nan")
        gmm.history_ = []
        gmm.split_history_ = []
        gmm.n_reseeded_ = 0
        return gmm

    # -- scoring ------------------------------------------------------------------------
    def _frames(self, X: Any) -> np.ndarray:
        """X checked for the fitted model: fitted first, then shape, dimension and finiteness."""
        self._check_fitted()
        return as_frames(X, n_features=self.n_features_in_, check_finite=True)

    def score_samples(self, X: FloatArray) -> FloatArray:
        """Log-density ``log p(x_t)`` of each frame, shape (n_frames,), float64."""
        X = self._frames(X)
        return frame_loglik(X, self.to_params(), chunk_size=self.chunk_size, dtype="float64")

    def score(self, X: FloatArray, y: Any = None) -> float:
        """Mean log-density per frame (float); ``y`` is ignored (scikit-learn's signature)."""
        return float(np.mean(self.score_samples(X)))

    def predict_proba(self, X: FloatArray) -> FloatArray:
        """Posterior probabilities of the components, shape (n_frames, K), float64."""
        X = self._frames(X)
        L = log_densities(X, self.to_params(), chunk_size=self.chunk_size, dtype="float64")
        return posteriors(L)

    def predict(self, X: FloatArray) -> IntArray:
        """Most probable component of each frame, shape (n_frames,), int64."""
        X = self._frames(X)
        params = self.to_params()
        out = np.empty(X.shape[0], dtype=np.int64)
        for a, b in blocks(X.shape[0], self.chunk_size):
            out[a:b] = log_densities(X[a:b], params, chunk_size=self.chunk_size).argmax(1)
        return out

    def sample(
        self, n_samples: int = 1, *, random_state: int | np.random.Generator | None = None
    ) -> tuple[FloatArray, IntArray]:
        """Draw frames from the mixture.

        Returns
        -------
        X : ndarray, shape (n_samples, D), float64
        labels : ndarray, shape (n_samples,), int64
            Component of each draw.
        """
        params = self.to_params()
        if n_samples < 1:
            raise ConfigError(f"sample: n_samples must be >= 1, got {n_samples}")
        rng = np.random.default_rng(random_state)
        K, D = params.means.shape
        w = params.weights / params.weights.sum()
        labels = rng.choice(K, size=n_samples, p=w).astype(np.int64)
        Z = rng.standard_normal((n_samples, D))
        if self.covariance_type in ("diag", "spherical"):
            sd = np.sqrt(params.diag_variances())
            return params.means[labels] + Z * sd[labels], labels
        chol = np.linalg.cholesky(params.covariances)
        if self.covariance_type == "tied":
            return params.means[labels] + Z @ chol.T, labels
        X = np.empty((n_samples, D))
        step = max(1, 4_000_000 // (D * D))
        for a in range(0, n_samples, step):  # bounded memory for the (n, D, D) gather
            b = min(n_samples, a + step)
            X[a:b] = params.means[labels[a:b]] + np.einsum("nij,nj->ni", chol[labels[a:b]], Z[a:b])
        return X, labels

    def n_parameters(self) -> int:
        """Number of free parameters (weights K-1, means K*D, covariances by type)."""
        return n_free_parameters(self.n_components, self._dim_for_count(), self.covariance_type)

    def _dim_for_count(self) -> int:
        self._check_fitted()
        return int(self.means_.shape[1])

    def bic(self, X: FloatArray) -> float:
        """Bayesian information criterion on X (lower is better)."""
        n = self._frames(X).shape[0]
        return float(-2.0 * self.score(X) * n + self.n_parameters() * np.log(n))

    def aic(self, X: FloatArray) -> float:
        """Akaike information criterion on X (lower is better)."""
        n = self._frames(X).shape[0]
        return float(-2.0 * self.score(X) * n + 2.0 * self.n_parameters())

    # -- persistence --------------------------------------------------------------------
    def save(self, path: PathLike) -> None:
        """Write the model to HDF5 (temporary name, then ``os.replace``).

        Datasets ``weights``, ``means``, ``covariances``, ``history``; attributes
        ``format``, ``format_version``, ``covariance_type``, ``config`` (JSON),
        ``converged``, ``n_iter``, ``lower_bound``, ``gmmspeaker_version``.
        """

        from gmmspeaker import __version__

        params = self.to_params()
        path = Path(path)
        with atomic_h5(path) as h5:
            h5.create_dataset("weights", data=params.weights)
            h5.create_dataset("means", data=params.means)
            h5.create_dataset("covariances", data=params.covariances)
            h5.create_dataset("history", data=np.asarray(getattr(self, "history_", []), dtype=np.float64))
            floor = getattr(self, "variance_floor_", None)
            if floor is not None:
                h5.create_dataset("variance_floor", data=np.asarray(floor, dtype=np.float64))
            h5.attrs["format"] = _FORMAT
            h5.attrs["format_version"] = _FORMAT_VERSION
            h5.attrs["gmmspeaker_version"] = __version__
            h5.attrs["covariance_type"] = self.covariance_type
            h5.attrs["config"] = json.dumps(self.get_config())
            h5.attrs["converged"] = bool(getattr(self, "converged_", False))
            h5.attrs["n_iter"] = int(getattr(self, "n_iter_", 0))
            h5.attrs["lower_bound"] = float(getattr(self, "lower_bound_", float("nan")))
            h5.attrs["split_history"] = json.dumps([list(t) for t in getattr(self, "split_history_", [])])
        logger.debug("saved %d-component %s mixture to %s", params.n_components, self.covariance_type, path)

    @classmethod
    def load(cls, path: PathLike) -> GaussianMixture:
        """Read a model written by :meth:`save`; raises :class:`ModelError` naming the file."""
        import h5py

        path = Path(path)
        if not path.is_file():
            raise ModelError(f"{path}: model file not found")
        try:
            with h5py.File(path, "r") as h5:
                if h5.attrs.get("format") != _FORMAT:
                    raise ModelError(
                        f"{path}: not a gmmspeaker GaussianMixture file (format attribute missing or wrong)"
                    )
                missing = [k for k in ("weights", "means", "covariances") if k not in h5]
                if missing:
                    raise ModelError(f"{path}: missing dataset(s) {missing}")
                cov_type = str(h5.attrs.get("covariance_type", ""))
                w, mu, cov = h5["weights"][()], h5["means"][()], h5["covariances"][()]
                history = h5["history"][()].tolist() if "history" in h5 else []
                floor = h5["variance_floor"][()] if "variance_floor" in h5 else None
                config = json.loads(h5.attrs.get("config", "{}"))
                converged = bool(h5.attrs.get("converged", False))
                n_iter = int(h5.attrs.get("n_iter", 0))
                lower_bound = float(h5.attrs.get("lower_bound", float("nan")))
                split_history = [tuple(t) for t in json.loads(h5.attrs.get("split_history", "[]"))]
        except ModelError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{path}: cannot read model ({exc})") from exc
        w, mu, cov = validate_params(w, mu, cov, cov_type, where=str(path))
        # files written before n_jobs was dropped from the config still carry it: ignored
        options = {k: v for k, v in config.items() if k not in _NOT_RESTORED}
        try:
            gmm = cls(mu.shape[0], covariance_type=cov_type, **options)
        except TypeError as exc:
            raise ModelError(f"{path}: unknown option in the stored config ({exc})") from exc
        gmm._set_params(MixtureParams(w, mu, cov, cov_type))
        gmm.converged_ = converged
        gmm.n_iter_ = n_iter
        gmm.lower_bound_ = lower_bound
        gmm.history_ = [float(v) for v in history]
        gmm.split_history_ = [(int(k), float(v)) for k, v in split_history]
        gmm.n_reseeded_ = 0
        if floor is not None:
            gmm.variance_floor_ = floor
        return gmm

    def __repr__(self) -> str:
        fitted = "fitted" if getattr(self, "means_", None) is not None else "not fitted"
        return f"GaussianMixture(n_components={self.n_components}, covariance_type={self.covariance_type!r}, {fitted})"

    @classmethod
    def from_sklearn(cls, model: Any, **options: Any) -> GaussianMixture:
        """A fitted model with the parameters of a fitted ``sklearn.mixture.GaussianMixture``
        (any covariance type; ``options`` are constructor keywords). See
        :mod:`gmmspeaker.gmm.interop`."""
        from gmmspeaker.gmm.interop import params_from_sklearn

        w, mu, cov, cov_type = params_from_sklearn(model)
        return cls.from_params(w, mu, cov, covariance_type=cov_type, **options)

    def to_sklearn(self) -> Any:
        """This model as a fitted ``sklearn.mixture.GaussianMixture`` (needs scikit-learn);
        its ``score_samples`` equals this one's. See :mod:`gmmspeaker.gmm.interop`."""
        from gmmspeaker.gmm.interop import sklearn_from_params

        self._check_fitted()
        return sklearn_from_params(self.weights_, self.means_, self.covariances_, self.covariance_type)
