"""Pruners (``[search] pruner``): stop a hopeless trial early, by Optuna's rules.

* ``none`` — every trial trains to its end (or its early stop);
* ``median`` — Optuna's ``MedianPruner`` (its defaults: no decision before 5 trials have
  completed; then a trial whose best value so far is worse than the median of the completed
  trials' values at the same epoch is pruned);
* ``asha`` — Optuna's ``SuccessiveHalvingPruner`` (asynchronous successive halving) with a
  minimum resource of one epoch and its default reduction factor 4: at epochs 1, 4, 16, ...
  a trial goes on only if its value is in the best quarter of the values the run's trials
  had at that epoch (while fewer than 4 compete: only if it is the best).

The decision is made inside the trial, with no round trip to the host: the study is rebuilt
once per trial from the run's history (:mod:`.study`: the per-epoch curves of the finished
trials), then the trial reports its objective after every epoch (:func:`epoch_hook`).
Pruning never happens at the last epoch (there is nothing left to save).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .rules import RULES
from .study import build_study, import_optuna

__all__ = [
    "ASHA_MIN_RESOURCE",
    "ASHA_REDUCTION_FACTOR",
    "PRUNERS",
    "EpochHook",
    "epoch_hook",
    "hook_for",
    "pruning",
]

#: The pruners a spec may name (``spec_rules.json``).
PRUNERS: tuple[str, ...] = tuple(RULES["search"]["pruner"]["values"])

#: Successive halving: the first rung is at this epoch ...
ASHA_MIN_RESOURCE = 1
#: ... and each next rung this many times later (Optuna's default).
ASHA_REDUCTION_FACTOR = 4

#: The trainer's per-epoch hook: ``(epoch, values) -> stop?``.
EpochHook = Callable[[int, dict[str, float]], bool]


def epoch_hook(
    pruner: str, history: list[dict], direction: str, objective: str, epochs: int
) -> EpochHook | None:
    """The trainer's ``on_epoch`` for ``pruner`` (``None`` for ``none``): reports
    ``values[objective]`` after each epoch and answers whether to stop."""
    if pruner == "none":
        return None
    optuna = import_optuna()
    study = build_study(
        history,
        direction,
        sampler=optuna.samplers.RandomSampler(seed=0),
        **pruning(pruner, epochs),
    )
    return hook_for(study.ask(), objective, epochs)


def pruning(pruner: str, epochs: int) -> dict[str, Any]:
    """:func:`~.study.build_study`'s ``pruner`` (Optuna's rule for ``pruner``, not
    ``none``) and ``rung_steps`` (the epochs of successive halving's rungs)."""
    optuna = import_optuna()
    rung_steps: list[int] = []
    if pruner == "median":
        rule: Any = optuna.pruners.MedianPruner()
    else:
        rule = optuna.pruners.SuccessiveHalvingPruner(
            min_resource=ASHA_MIN_RESOURCE, reduction_factor=ASHA_REDUCTION_FACTOR
        )
        step = ASHA_MIN_RESOURCE
        while step <= epochs:
            rung_steps.append(step)
            step *= ASHA_REDUCTION_FACTOR
    return {"pruner": rule, "rung_steps": rung_steps}


def hook_for(trial: Any, objective: str, epochs: int) -> EpochHook:
    """The per-epoch hook that reports to the Optuna ``trial`` of a study built with a
    pruner, and stops when its rule says so (never at the last epoch)."""

    def on_epoch(epoch: int, values: dict[str, float]) -> bool:
        value = values.get(objective)
        if value is None or not math.isfinite(value) or epoch >= epochs:
            return False
        trial.report(float(value), epoch)
        return bool(trial.should_prune())

    return on_epoch
