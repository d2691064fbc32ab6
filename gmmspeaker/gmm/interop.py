"""Moving Gaussian mixtures between toolkits: scikit-learn objects and Kaldi's text DiagGMM.

The functions here work on plain arrays ``(weights, means, covariances, covariance_type)``
so that :mod:`gmmspeaker.gmm.model` can call them without an import cycle;
:meth:`GaussianMixture.from_sklearn` and :meth:`GaussianMixture.to_sklearn` are the thin
user-facing wrappers. A Kaldi file becomes a model with::

    GaussianMixture.from_params(*read_kaldi_diag_gmm("final.dubm.txt"))

Kaldi's diagonal GMM (``gmm-global-copy --binary=false final.dubm -``) stores natural
parameters: per component ``k`` the inverse variances ``1 / var_k`` (``<INV_VARS>``), the
means times them ``mu_k / var_k`` (``<MEANS_INVVARS>``), the weights and the constants
``gconst_k = log w_k - D/2 log(2 pi) + 1/2 sum_d log(1/var_kd) - 1/2 sum_d mu_kd^2 / var_kd``
(``<GCONSTS>``), so that ``log w_k N(x; mu_k, var_k) = gconst_k + x . (mu_k / var_k)
- 1/2 x^2 . (1 / var_k)``. The constants are recomputed on write and checked on read.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from gmmspeaker._io import atomic_write_text
from gmmspeaker._typing import FloatArray, PathLike
from gmmspeaker.errors import ModelError

__all__ = [
    "kaldi_gconsts",
    "params_from_sklearn",
    "read_kaldi_diag_gmm",
    "sklearn_from_params",
    "write_kaldi_diag_gmm",
]

#: Relative tolerance of the ``<GCONSTS>`` check on read (Kaldi prints about 7 digits).
GCONST_RTOL = 1e-4

_COVARIANCE_TYPES = ("diag", "full", "spherical", "tied")


# --------------------------------------------------------------------------- scikit-learn
def params_from_sklearn(model: Any) -> tuple[FloatArray, FloatArray, FloatArray, str]:
    """Parameters of a fitted ``sklearn.mixture.GaussianMixture``.

    Parameters
    ----------
    model : sklearn.mixture.GaussianMixture
        Fitted (it has ``weights_``, ``means_``, ``covariances_``); any covariance type.

    Returns
    -------
    weights : ndarray of float64, shape (K,)
    means : ndarray of float64, shape (K, D)
    covariances : ndarray of float64
        Shape (K, D) diag, (K, D, D) full, (K,) spherical, (D, D) tied (the same layout in
        both libraries).
    covariance_type : str

    Raises
    ------
    ModelError
        The object is not fitted or has an unknown covariance type.
    """
    missing = [a for a in ("weights_", "means_", "covariances_", "covariance_type") if not hasattr(model, a)]
    if missing:
        raise ModelError(
            f"from_sklearn: {type(model).__name__} has no {missing}; pass a fitted "
            "sklearn.mixture.GaussianMixture"
        )
    cov_type = str(model.covariance_type)
    if cov_type not in _COVARIANCE_TYPES:
        raise ModelError(
            f"from_sklearn: unknown covariance_type {cov_type!r}; expected one of {_COVARIANCE_TYPES}"
        )
    return (
        np.array(model.weights_, dtype=np.float64),
        np.array(model.means_, dtype=np.float64),
        np.array(model.covariances_, dtype=np.float64),
        cov_type,
    )


def _precision_cholesky(covariances: FloatArray, covariance_type: str) -> tuple[FloatArray, FloatArray]:
    """``(precisions_cholesky, precisions)`` in scikit-learn's convention: for full and tied
    ``P = U U^T`` with ``U = inv(L)^T`` upper triangular, ``L`` the Cholesky factor of the
    covariance; for diag and spherical ``1 / sqrt(var)`` and ``1 / var``."""
    if covariance_type in ("diag", "spherical"):
        return 1.0 / np.sqrt(covariances), 1.0 / covariances
    covs = covariances[None] if covariance_type == "tied" else covariances
    L = np.linalg.cholesky(covs)  # batched over components
    eye = np.broadcast_to(np.eye(covs.shape[-1]), covs.shape)
    chol = np.swapaxes(np.tril(np.linalg.solve(L, eye)), -1, -2)  # inv(L)^T, upper triangular
    prec = chol @ np.swapaxes(chol, -1, -2)
    if covariance_type == "tied":
        return chol[0], prec[0]
    return chol, prec


def sklearn_from_params(
    weights: FloatArray, means: FloatArray, covariances: FloatArray, covariance_type: str
) -> Any:
    """A fitted ``sklearn.mixture.GaussianMixture`` holding these parameters.

    Parameters
    ----------
    weights : ndarray of float, shape (K,)
    means : ndarray of float, shape (K, D)
    covariances : ndarray of float
        Shape of ``covariance_type`` (see :func:`params_from_sklearn`).
    covariance_type : {"diag", "full", "spherical", "tied"}

    Returns
    -------
    sklearn.mixture.GaussianMixture
        ``weights_``, ``means_``, ``covariances_``, ``precisions_`` and
        ``precisions_cholesky_`` set (float64), so ``score_samples``, ``predict`` and
        ``sample`` work; ``converged_ = True``, ``n_iter_ = 0``.

    Raises
    ------
    ModelError
        scikit-learn is not installed.
    """
    try:
        from sklearn.mixture import GaussianMixture as SkGaussianMixture
    except ImportError as exc:
        raise ModelError(
            "to_sklearn: scikit-learn is not installed (python -m pip install scikit-learn)"
        ) from exc
    w = np.array(weights, dtype=np.float64)
    mu = np.array(means, dtype=np.float64)
    cov = np.array(covariances, dtype=np.float64)
    sk = SkGaussianMixture(n_components=mu.shape[0], covariance_type=covariance_type)
    sk.weights_ = w
    sk.means_ = mu
    sk.covariances_ = cov
    sk.precisions_cholesky_, sk.precisions_ = _precision_cholesky(cov, covariance_type)
    sk.converged_ = True
    sk.n_iter_ = 0
    sk.lower_bound_ = float("nan")
    sk.n_features_in_ = mu.shape[1]
    return sk


# --------------------------------------------------------------------------- Kaldi text
def kaldi_gconsts(weights: FloatArray, means: FloatArray, variances: FloatArray) -> FloatArray:
    """Kaldi's per-component constants of a diagonal GMM.

    Parameters
    ----------
    weights : ndarray of float, shape (K,)
    means, variances : ndarray of float, shape (K, D)

    Returns
    -------
    ndarray of float64, shape (K,)
        ``log w_k - D/2 log(2 pi) - 1/2 sum_d log var_kd - 1/2 sum_d mu_kd^2 / var_kd``.
    """
    w = np.asarray(weights, dtype=np.float64)
    mu = np.asarray(means, dtype=np.float64)
    var = np.asarray(variances, dtype=np.float64)
    D = mu.shape[1]
    with np.errstate(divide="ignore"):
        logw = np.log(w)
    return logw - 0.5 * D * math.log(2.0 * math.pi) - 0.5 * np.log(var).sum(1) - 0.5 * (mu * mu / var).sum(1)


_TOKEN = re.compile(r"<[^<>\s]+>|\[|\]|[^\s\[\]<>]+")


def _parse_block(tokens: list[str], pos: int, where: str, name: str) -> tuple[list[list[float]], int]:
    """Rows of numbers between ``[`` and ``]`` (one row per line in the source; the caller
    gives lines as separate token lists joined with ``"\\n"`` markers)."""
    if pos >= len(tokens) or tokens[pos] != "[":
        got = tokens[pos] if pos < len(tokens) else "end of file"
        raise ModelError(f"{where}: expected '[' after {name}, got {got!r}")
    pos += 1
    rows: list[list[float]] = [[]]
    while pos < len(tokens) and tokens[pos] != "]":
        tok = tokens[pos]
        if tok.startswith("<"):
            raise ModelError(f"{where}: {name}: missing ']' before {tok}")
        if tok == "\n":
            if rows[-1]:
                rows.append([])
        else:
            try:
                rows[-1].append(float(tok))
            except ValueError:
                raise ModelError(f"{where}: {name}: {tok!r} is not a number") from None
        pos += 1
    if pos >= len(tokens):
        raise ModelError(f"{where}: {name}: missing ']' (file truncated?)")
    if not rows[-1]:
        rows.pop()
    return rows, pos + 1


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    for line in text.splitlines():
        out.extend(_TOKEN.findall(line))
        out.append("\n")
    return out


def read_kaldi_diag_gmm(path: PathLike) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Read a diagonal GMM in Kaldi's text format.

    Accepts what ``gmm-global-copy --binary=false`` prints: ``<DiagGMM> <GCONSTS> [ ... ]
    <WEIGHTS> [ ... ] <MEANS_INVVARS> [ rows ] <INV_VARS> [ rows ] </DiagGMM>`` (the older
    ``<DiagGMMBegin>`` / ``<DiagGMMEnd>`` tokens too; ``<GCONSTS>`` is optional and, when
    present, checked against the other parameters).

    Parameters
    ----------
    path : path-like
        Text file.

    Returns
    -------
    weights : ndarray of float64, shape (K,)
    means : ndarray of float64, shape (K, D)
    variances : ndarray of float64, shape (K, D)
        Ready for ``GaussianMixture.from_params(weights, means, variances)``.

    Raises
    ------
    ModelError
        Missing file, binary Kaldi file, unknown or missing token, non-numeric value,
        inconsistent shapes, non-positive inverse variances, weights not summing to 1, or
        ``<GCONSTS>`` that disagree with the parameters; the message names the file.
    """
    p = Path(path)
    where = str(p)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ModelError(f"{where}: cannot read Kaldi GMM ({exc.strerror or exc})") from None
    if raw.startswith(b"\0B"):
        raise ModelError(
            f"{where}: a binary Kaldi file; convert it with "
            f"'gmm-global-copy --binary=false {p.name} {p.name}.txt' and read the text copy"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ModelError(f"{where}: not a text file (not UTF-8)") from None
    tokens = _tokens(text)
    pos = 0

    def next_token() -> str:
        nonlocal pos
        while pos < len(tokens) and tokens[pos] == "\n":
            pos += 1
        if pos >= len(tokens):
            raise ModelError(f"{where}: unexpected end of file (truncated Kaldi GMM?)")
        tok = tokens[pos]
        pos += 1
        return tok

    def skip_newlines() -> None:
        nonlocal pos
        while pos < len(tokens) and tokens[pos] == "\n":
            pos += 1

    first = next_token()
    if first not in ("<DiagGMM>", "<DiagGMMBegin>"):
        raise ModelError(f"{where}: expected <DiagGMM> at the start of a Kaldi diagonal GMM, got {first!r}")
    end_token = "</DiagGMM>" if first == "<DiagGMM>" else "<DiagGMMEnd>"
    blocks: dict[str, list[list[float]]] = {}
    expected = ["<GCONSTS>", "<WEIGHTS>", "<MEANS_INVVARS>", "<INV_VARS>"]
    while True:
        tok = next_token()
        if tok == end_token:
            break
        if tok not in expected:
            raise ModelError(f"{where}: unexpected token {tok!r}; expected one of {expected + [end_token]}")
        if tok in blocks:
            raise ModelError(f"{where}: {tok} appears twice")
        skip_newlines()
        blocks[tok], pos = _parse_block(tokens, pos, where, tok)
    for tok in expected[1:]:
        if tok not in blocks:
            raise ModelError(f"{where}: missing {tok}")
    trailing = [t for t in tokens[pos:] if t != "\n"]
    if trailing:
        raise ModelError(f"{where}: unexpected {trailing[0]!r} after {end_token}")

    def vector(tok: str) -> FloatArray:
        values = [v for row in blocks[tok] for v in row]
        return np.array(values, dtype=np.float64)

    def matrix(tok: str) -> FloatArray:
        rows = blocks[tok]
        if not rows:
            raise ModelError(f"{where}: {tok} is empty")
        widths = {len(r) for r in rows}
        if len(widths) != 1:
            raise ModelError(f"{where}: {tok}: rows have different lengths {sorted(widths)}")
        return np.array(rows, dtype=np.float64)

    w = vector("<WEIGHTS>")
    mean_iv = matrix("<MEANS_INVVARS>")
    inv_var = matrix("<INV_VARS>")
    K = w.shape[0]
    if K == 0:
        raise ModelError(f"{where}: <WEIGHTS> is empty")
    if mean_iv.shape[0] != K or inv_var.shape != mean_iv.shape:
        raise ModelError(
            f"{where}: inconsistent sizes: {K} weights, <MEANS_INVVARS> {mean_iv.shape}, "
            f"<INV_VARS> {inv_var.shape}"
        )
    for tok, arr in (("<WEIGHTS>", w), ("<MEANS_INVVARS>", mean_iv), ("<INV_VARS>", inv_var)):
        if not np.isfinite(arr).all():
            raise ModelError(f"{where}: {tok} holds NaN or inf")
    if (inv_var <= 0).any():
        k, d = np.argwhere(inv_var <= 0)[0]
        raise ModelError(f"{where}: <INV_VARS> must be positive; component {k}, dim {d} is {inv_var[k, d]:g}")
    if (w < 0).any():
        raise ModelError(f"{where}: <WEIGHTS> must be non-negative (min {w.min():g})")
    if abs(w.sum() - 1.0) > 1e-4:
        raise ModelError(f"{where}: <WEIGHTS> must sum to 1, they sum to {w.sum():.7g}")
    w = w / w.sum()  # printed with ~7 digits: renormalise exactly
    var = 1.0 / inv_var
    mu = mean_iv * var
    if "<GCONSTS>" in blocks:
        g = vector("<GCONSTS>")
        if g.shape != (K,):
            raise ModelError(f"{where}: <GCONSTS> has {g.shape[0]} values for {K} components")
        expect = kaldi_gconsts(w, mu, var)
        D = mu.shape[1]
        scale = (
            1.0
            + np.abs(np.log(np.maximum(w, 1e-300)))
            + 0.5 * D * math.log(2.0 * math.pi)
            + 0.5 * np.abs(np.log(var)).sum(1)
            + 0.5 * (mu * mu / var).sum(1)
        )
        bad = np.abs(g - expect) > GCONST_RTOL * scale
        bad &= w > 0  # Kaldi prints -inf-like values for empty components; not ours to judge
        if bad.any():
            k = int(np.argmax(bad))
            raise ModelError(
                f"{where}: <GCONSTS> disagree with the other parameters: component {k} has "
                f"{g[k]:.7g}, the weights, means and variances give {expect[k]:.7g} (corrupt file?)"
            )
    return w, mu, var


def _fmt_row(values: FloatArray) -> str:
    return " ".join(f"{v:.9g}" for v in values)


def write_kaldi_diag_gmm(
    path: PathLike,
    weights: FloatArray,
    means: FloatArray,
    covariances: FloatArray,
    covariance_type: str = "diag",
) -> None:
    """Write a diagonal GMM in Kaldi's text format (readable by ``gmm-global-copy``).

    Parameters
    ----------
    path : path-like
        Output file, written to a temporary name and renamed.
    weights : ndarray of float, shape (K,)
    means : ndarray of float, shape (K, D)
    covariances : ndarray of float
        Variances, shape (K, D) for ``"diag"`` or (K,) for ``"spherical"`` (broadcast).
    covariance_type : {"diag", "spherical"}
        Kaldi's DiagGmm has no full covariances: other types raise.

    Raises
    ------
    ModelError
        A covariance type that a diagonal GMM cannot hold.
    """
    mu = np.asarray(means, dtype=np.float64)
    cov = np.asarray(covariances, dtype=np.float64)
    if covariance_type == "spherical":
        cov = np.repeat(cov[:, None], mu.shape[1], axis=1)
    elif covariance_type != "diag":
        raise ModelError(
            f"{path}: Kaldi's text DiagGMM holds diagonal covariances only, got {covariance_type!r}"
        )
    w = np.asarray(weights, dtype=np.float64)
    g = kaldi_gconsts(w, mu, cov)
    inv_var = 1.0 / cov

    def matrix(rows: FloatArray) -> list[str]:  # Kaldi's layout: "[" then one row per line, "]" on the last
        body = [f"  {_fmt_row(r)} " for r in rows]
        body[-1] += "]"
        return [" [", *body]

    lines = [
        "<DiagGMM> ",
        f"<GCONSTS>  [ {_fmt_row(g)} ]",
        f"<WEIGHTS>  [ {_fmt_row(w)} ]",
        "<MEANS_INVVARS> " + "\n".join(matrix(mu * inv_var)),
        "<INV_VARS> " + "\n".join(matrix(inv_var)),
        "</DiagGMM> ",
    ]
    atomic_write_text(path, "\n".join(lines) + "\n")
