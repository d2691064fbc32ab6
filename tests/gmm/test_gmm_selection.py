"""Model selection by BIC / AIC / held-out likelihood (gmmspeaker.gmm.selection)."""

from __future__ import annotations

import numpy as np
import pytest

from gmmspeaker.errors import ConfigError
from gmmspeaker.gmm import select_model

from .conftest import draw_mixture


def test_bic_picks_true_k():
    X, _ = draw_mixture(np.random.default_rng(3), 3000, K=3, D=3, sep=6.0)
    res = select_model(X, [1, 2, 3, 4, 6], criterion="bic", random_state=0, tol=1e-4)
    assert res.best.n_components == 3
    assert [r["n_components"] for r in res.table] == [1, 2, 3, 4, 6]
    assert res.table[res.best_index]["bic"] == min(r["bic"] for r in res.table)
    assert "*" in res.to_text()


def test_heldout_and_covariance_types():
    X, _ = draw_mixture(np.random.default_rng(4), 2000, K=2, D=2, sep=6.0)
    res = select_model(X, [1, 2, 3], covariance_types=("diag", "full"), criterion="heldout", random_state=0)
    assert len(res.table) == 6
    assert all(np.isfinite(r["heldout_loglik"]) for r in res.table)
    assert res.best.n_components >= 2
    aic = select_model(X, [1, 2], criterion="aic")
    assert aic.best.n_components == 2
    with pytest.raises(ConfigError, match="criterion"):
        select_model(X, [1], criterion="bogus")
