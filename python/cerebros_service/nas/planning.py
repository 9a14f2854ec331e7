"""A trial's plan: its architecture (``[search] strategy``) and its per-epoch pruning hook
(``[search] pruner``), from at most one study of the run's history.

With an Optuna strategy (``tpe``, ``cmaes``) and a pruner, one study serves both: its sampler
suggests the trial's shape, and the same trial reports its epochs to the pruner's rule. A
study is rebuilt from the whole history for each trial, so building it once instead of twice
matters for the short trials that pruning makes. The plan is the one the two separate
studies gave: samplers do not read what the pruner's rungs record, and pruners do not read
parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .pruning import EpochHook, epoch_hook, hook_for, pruning
from .search_space import Architecture
from .strategies import architecture_of, sampling, suggest_architecture
from .study import build_study

__all__ = ["plan_trial"]


def plan_trial(
    space: Mapping[str, Any],
    seed: int,
    search: Mapping[str, str],
    history: list[dict],
    direction: str,
    objective: str,
    epochs: int,
) -> tuple[Architecture, EpochHook | None]:
    """The architecture of the trial seeded ``seed`` and its ``on_epoch`` hook (``None``
    without a pruner), given the run's checked ``history``."""
    strategy, pruner = search["strategy"], search["pruner"]
    if strategy == "random" or pruner == "none":
        return (
            suggest_architecture(space, seed, strategy, history, direction),
            epoch_hook(pruner, history, direction, objective, epochs),
        )
    study = build_study(
        history,
        direction,
        **sampling(space, seed, strategy, history),
        **pruning(pruner, epochs),
    )
    trial = study.ask()
    return architecture_of(space, seed, trial), hook_for(trial, objective, epochs)
