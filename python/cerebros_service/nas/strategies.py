"""Search strategies (``[search] strategy``): where a trial's architecture comes from.

* ``random`` — :func:`~.search_space.sample_architecture`, from the trial's seed alone;
* ``tpe`` — Optuna's ``TPESampler``;
* ``cmaes`` — Optuna's ``CmaEsSampler`` (needs the ``cmaes`` package).

For ``tpe`` and ``cmaes`` the sampler is rebuilt for every suggestion from the run's history
(:mod:`.study`), seeded from the trial's seed (itself derived from the run seed and the
trial's index), so a suggestion depends only on the run seed, the index and the history.
The sampler chooses the *shape* (``levels``, ``units_K``, ``neurons_K_J``, ``activation``,
``learning_rate``, each over the search space's range, the learning rate log-uniform); the
connections are drawn from the trial's seed as with ``random``. Units and neurons of levels
a trial does not have are conditional parameters: TPE models them from the trials that have
them, CMA-ES samples them independently (it models the parameters every trial has).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._dispatch import OpError
from .rules import RULES
from .search_space import (
    ARCH_STREAM,
    Architecture,
    build_architecture,
    sample_architecture,
    seeded_rng,
)
from .study import (
    build_study,
    import_optuna,
    neurons_name,
    param_names,
    units_name,
)

__all__ = [
    "STRATEGIES",
    "OptunaChoices",
    "architecture_of",
    "require",
    "sampling",
    "suggest_architecture",
]

#: The strategies a spec may name (``spec_rules.json``).
STRATEGIES: tuple[str, ...] = tuple(RULES["search"]["strategy"]["values"])


class OptunaChoices:
    """The shape of an architecture suggested by an Optuna trial (see the module docs)."""

    def __init__(self, trial: Any) -> None:
        self._trial = trial

    def levels(self, low: int, high: int) -> int:
        return int(self._trial.suggest_int("levels", low, high))

    def units(self, level: int, low: int, high: int) -> int:
        return int(self._trial.suggest_int(units_name(level), low, high))

    def neurons(self, level: int, units: int, low: int, high: int) -> list[int]:
        return [
            int(self._trial.suggest_int(neurons_name(level, j), low, high)) for j in range(units)
        ]

    def activation(self, names: list[str]) -> str:
        return str(self._trial.suggest_categorical("activation", names))

    def learning_rate(self, low: float, high: float) -> float:
        return float(self._trial.suggest_float("learning_rate", low, high, log=True))


def require(strategy: str) -> None:
    """Refuse up front (``dependency``, with the install hint) a strategy whose library is
    missing."""
    if strategy == "random":
        return
    import_optuna()
    if strategy == "cmaes":
        try:
            import cmaes  # noqa: F401
        except ImportError as exc:
            raise OpError(
                "dependency",
                f"cmaes cannot be imported ({exc}); the cmaes strategy needs it:"
                " pip install 'cerebros_service[search]'",
                {"module": "cmaes"},
            ) from exc


def suggest_architecture(
    space: Mapping[str, Any],
    seed: int,
    strategy: str,
    history: list[dict],
    direction: str,
) -> Architecture:
    """The architecture of the trial seeded ``seed``, by ``strategy``, given the run's
    checked ``history`` (ignored by ``random``)."""
    if strategy == "random":
        return sample_architecture(space, seed)
    study = build_study(history, direction, **sampling(space, seed, strategy, history))
    return architecture_of(space, seed, study.ask())


def sampling(
    space: Mapping[str, Any], seed: int, strategy: str, history: list[dict]
) -> dict[str, Any]:
    """:func:`~.study.build_study`'s ``sampler`` and ``distributions`` for ``strategy``
    (``tpe`` or ``cmaes``), the sampler seeded from the trial's ``seed``."""
    require(strategy)
    optuna = import_optuna()
    sampler_seed = seed % 2**32
    if strategy == "tpe":
        sampler = optuna.samplers.TPESampler(seed=sampler_seed)
    else:
        sampler = optuna.samplers.CmaEsSampler(seed=sampler_seed, warn_independent_sampling=False)
    return {
        "sampler": sampler,
        "distributions": _distributions(optuna, space, param_names(history)),
    }


def architecture_of(space: Mapping[str, Any], seed: int, trial: Any) -> Architecture:
    """The architecture whose shape the Optuna ``trial`` suggests, connected from ``seed``."""
    return build_architecture(space, OptunaChoices(trial), seeded_rng(seed, ARCH_STREAM))


def _distributions(optuna: Any, space: Mapping[str, Any], names: set[str]) -> dict[str, Any]:
    """The Optuna distribution of each parameter name of :class:`OptunaChoices` in
    ``names`` (others are not parameters of ``space``)."""
    dist = optuna.distributions
    result: dict[str, Any] = {}
    for name in names:
        if name == "levels":
            result[name] = dist.IntDistribution(space["minimum_levels"], space["maximum_levels"])
        elif name.startswith("units_"):
            result[name] = dist.IntDistribution(
                space["minimum_units_per_level"], space["maximum_units_per_level"]
            )
        elif name.startswith("neurons_"):
            result[name] = dist.IntDistribution(
                space["minimum_neurons_per_unit"], space["maximum_neurons_per_unit"]
            )
        elif name == "activation":
            result[name] = dist.CategoricalDistribution(list(space["activation"]))
        elif name == "learning_rate":
            low, high = space["learning_rate"]
            result[name] = dist.FloatDistribution(low, high, log=True)
    return result
