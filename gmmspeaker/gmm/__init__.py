"""Gaussian mixtures: the model, its E-step statistics, EM training and model selection."""

from gmmspeaker.gmm.model import GaussianMixture
from gmmspeaker.gmm.selection import SelectionResult, select_model
from gmmspeaker.gmm.stats import MixtureParams, Stats, accumulate, frame_loglik, log_densities

__all__ = [
    "GaussianMixture",
    "MixtureParams",
    "SelectionResult",
    "Stats",
    "accumulate",
    "frame_loglik",
    "log_densities",
    "select_model",
]
