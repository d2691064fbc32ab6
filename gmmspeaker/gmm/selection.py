"""Model selection: fit a grid of sizes (and covariance types) and pick by BIC, AIC or
held-out log-likelihood."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gmmspeaker._typing import FloatArray
from gmmspeaker.errors import ConfigError, DataError
from gmmspeaker.gmm.model import GaussianMixture

__all__ = ["SelectionResult", "select_model", "CRITERIA"]

logger = logging.getLogger(__name__)

CRITERIA = ("bic", "aic", "heldout")


@dataclass(frozen=True, kw_only=True)
class SelectionResult:
    """Scores of every candidate and the chosen model.

    Attributes
    ----------
    table : list of dict
        One row per candidate, in fit order: ``n_components``, ``covariance_type``,
        ``n_parameters``, ``train_loglik`` (mean per frame), ``heldout_loglik`` (mean per
        held-out frame, NaN without held-out data), ``bic``, ``aic`` (on the training
        frames), ``converged``, ``n_iter``, ``seconds``.
    best : GaussianMixture
        The fitted model with the best score.
    best_index : int
        Row of ``best`` in ``table``.
    criterion : str
        ``"bic"``, ``"aic"`` (lower is better) or ``"heldout"`` (higher is better).
    """

    table: list[dict[str, Any]]
    best: GaussianMixture
    best_index: int
    criterion: str

    def to_text(self) -> str:
        """The table as aligned plain text, the chosen row marked with ``*``."""
        head = f"{'':1} {'K':>5} {'cov':>9} {'params':>8} {'train':>10} {'heldout':>10} {'bic':>14} {'aic':>14} {'iter':>4}"
        lines = [head]
        for i, r in enumerate(self.table):
            mark = "*" if i == self.best_index else " "
            lines.append(
                f"{mark} {r['n_components']:>5d} {r['covariance_type']:>9} {r['n_parameters']:>8d} "
                f"{r['train_loglik']:>10.4f} {r['heldout_loglik']:>10.4f} {r['bic']:>14.1f} {r['aic']:>14.1f} {r['n_iter']:>4d}"
            )
        return "\n".join(lines)


def select_model(
    X: FloatArray,
    n_components: Sequence[int],
    *,
    covariance_types: Sequence[str] = ("diag",),
    criterion: str = "bic",
    X_heldout: FloatArray | None = None,
    heldout_fraction: float = 0.2,
    random_state: int | None = 0,
    **gmm_options: Any,
) -> SelectionResult:
    """Fit every (K, covariance type) candidate and choose one.

    Parameters
    ----------
    X : ndarray, shape (n_frames, D)
        Training frames.
    n_components : sequence of int
        Candidate sizes K.
    covariance_types : sequence of str
        Candidate covariance types.
    criterion : {"bic", "aic", "heldout"}
        BIC / AIC on the training frames (lower is better), or mean log-likelihood of
        held-out frames (higher is better).
    X_heldout : ndarray, shape (m, D), optional
        Held-out frames; for ``criterion="heldout"`` without them, a random
        ``heldout_fraction`` of X is held out (and not used for training).
    random_state : int or None
        Seed of the held-out split and of every fit (the same seed for each candidate).
    **gmm_options
        Further :class:`GaussianMixture` keywords (``init``, ``max_iter``, ``n_init``, ...).

    Returns
    -------
    SelectionResult
    """
    if criterion not in CRITERIA:
        raise ConfigError(f"select_model: criterion must be one of {CRITERIA}, got {criterion!r}")
    sizes = [int(k) for k in n_components]
    if not sizes or min(sizes) < 1:
        raise ConfigError(
            f"select_model: n_components must be a non-empty list of positive ints, got {list(n_components)}"
        )
    if not covariance_types:
        raise ConfigError("select_model: covariance_types is empty")
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] == 0:
        raise DataError(f"select_model: X must be a non-empty (frames, dims) array, got shape {X.shape}")
    if criterion == "heldout" and X_heldout is None:
        if not 0.0 < heldout_fraction < 1.0:
            raise ConfigError(f"select_model: heldout_fraction must be in (0, 1), got {heldout_fraction}")
        perm = np.random.default_rng(random_state).permutation(X.shape[0])
        n_held = max(1, int(round(heldout_fraction * X.shape[0])))
        X_heldout, X = X[perm[:n_held]], X[perm[n_held:]]
    table: list[dict[str, Any]] = []
    models: list[GaussianMixture] = []
    for cov in covariance_types:
        for k in sizes:
            t0 = time.perf_counter()
            gmm = GaussianMixture(k, covariance_type=cov, random_state=random_state, **gmm_options).fit(X)
            train = gmm.score(X)
            n = X.shape[0]
            p = gmm.n_parameters()
            row = {
                "n_components": k,
                "covariance_type": cov,
                "n_parameters": p,
                "train_loglik": train,
                "heldout_loglik": gmm.score(X_heldout) if X_heldout is not None else float("nan"),
                "bic": float(-2.0 * train * n + p * np.log(n)),
                "aic": float(-2.0 * train * n + 2.0 * p),
                "converged": bool(gmm.converged_),
                "n_iter": int(gmm.n_iter_),
                "seconds": time.perf_counter() - t0,
            }
            logger.info(
                "select_model: K=%d %s: bic %.1f aic %.1f heldout %.4f",
                k,
                cov,
                row["bic"],
                row["aic"],
                row["heldout_loglik"],
            )
            table.append(row)
            models.append(gmm)
    if criterion == "heldout":
        best = int(np.argmax([r["heldout_loglik"] for r in table]))
    else:
        best = int(np.argmin([r[criterion] for r in table]))
    return SelectionResult(table=table, best=models[best], best_index=best, criterion=criterion)
