"""Trained recognition systems: one class per recipe ``system:`` value, and their fusion.

:func:`build` gives the object a recipe's workdir stands for: the one system, or a
:class:`~gmmspeaker.systems.fused.Fused` of several. Adding a system is a
:class:`~gmmspeaker.systems.base.TrainedSystem` subclass registered in :data:`SYSTEMS`
(and the recipe stage-table rows that train it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gmmspeaker.systems.base import NormCohort, Tests, TrainedSystem, cohort_sides
from gmmspeaker.systems.fused import Fused
from gmmspeaker.systems.gmm_ubm import GmmUbm
from gmmspeaker.systems.isv import Isv
from gmmspeaker.systems.ivector import Ivector

if TYPE_CHECKING:
    from gmmspeaker.recipe.config import Recipe
    from gmmspeaker.workdir import Workdir

__all__ = [
    "SYSTEMS",
    "build",
    "leaves",
    "TrainedSystem",
    "GmmUbm",
    "Ivector",
    "Isv",
    "Fused",
    "NormCohort",
    "Tests",
    "cohort_sides",
]

#: ``system:`` name -> its trained-system class.
SYSTEMS: dict[str, type[TrainedSystem]] = {"gmm_ubm": GmmUbm, "ivector": Ivector, "isv": Isv}


def leaves(wd: Workdir, recipe: Recipe) -> list[TrainedSystem]:
    """One trained system per name in the recipe's ``system:``, in that order."""
    return [SYSTEMS[name](wd, recipe) for name in recipe.system]


def build(wd: Workdir, recipe: Recipe) -> TrainedSystem:
    """The experiment's system: the recipe's one system, or the fusion of its systems."""
    parts = leaves(wd, recipe)
    return parts[0] if len(parts) == 1 else Fused(wd, recipe, parts)
