"""The Cerebros-style search space and the seeded sampling of one architecture.

An architecture is a stack of *levels*; each level holds one or more dense *units*, each unit
a number of *neurons* sharing the network's activation. Level 0 is the input features. A unit
of level ``k >= 1`` reads:

* a sampled subset of the units of earlier levels, the input included (each candidate is
  taken with probability ``p_predecessor_connection``), always at least one unit of level
  ``k - 1`` (for level 1 that is the input itself);
* *lateral* connections from **earlier** units of its own level (each with probability
  ``p_lateral_connection``), so the whole graph stays a DAG.

The output layer reads the concatenation of the last level's units (softmax for
classification, linear for regression).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .rules import ACTIVATIONS, check_section, defaults

__all__ = [
    "ACTIVATIONS",
    "DEFAULT_SEARCH_SPACE",
    "Architecture",
    "Choices",
    "RandomChoices",
    "build_architecture",
    "normalize_search_space",
    "sample_architecture",
]

#: Defaults filled in by :func:`normalize_search_space` (the example of DESIGN §4), from
#: ``spec_rules.json`` like every rule of the search space.
DEFAULT_SEARCH_SPACE: dict[str, Any] = defaults("search_space")

# Seed streams derived from a trial seed (see ``trainer``): architecture sampling uses 1.
ARCH_STREAM = 1


def normalize_search_space(raw: Mapping[str, Any] | None, prefix: str = "search_space") -> dict:
    """Validate ``raw`` and return the complete search space, defaults filled.

    Idempotent: a normalised space normalises to itself. Raises ``OpError("contract", ...)``
    naming the key (``search_space.maximum_levels``) for what ``spec_rules.json`` refuses:
    unknown keys, non-integers, values outside their bounds, a minimum above its maximum,
    probabilities outside [0, 1], unsupported activations and a learning rate that is not a
    ``[low, high]`` pair with ``0 < low <= high <= 1``.
    """
    return check_section("search_space", raw, prefix)


# -- architectures --------------------------------------------------------------------------

Unit = tuple[int, int]  # (level, index in level); (0, 0) is the input


@dataclass(frozen=True)
class Architecture:
    """One sampled candidate.

    ``levels[k - 1][j]`` is the neuron count of unit ``j`` of level ``k``;
    ``inputs[k - 1][j]`` its predecessor units ``(level, index)`` from earlier levels
    (``(0, 0)`` is the input features); ``laterals[k - 1][j]`` the indices of the earlier
    units of the same level that also feed it.
    """

    levels: tuple[tuple[int, ...], ...]
    inputs: tuple[tuple[tuple[tuple[int, int], ...], ...], ...]
    laterals: tuple[tuple[tuple[int, ...], ...], ...]
    activation: str
    learning_rate: float

    def __post_init__(self) -> None:
        if not self.levels or any(not level for level in self.levels):
            raise ValueError("an architecture needs at least one level of at least one unit")
        for k, level in enumerate(self.levels, start=1):
            if len(self.inputs[k - 1]) != len(level) or len(self.laterals[k - 1]) != len(level):
                raise ValueError(f"level {k}: inputs/laterals do not match its units")
            for j in range(len(level)):
                preds = self.inputs[k - 1][j]
                if not any(p == k - 1 for p, _ in preds):
                    raise ValueError(f"unit ({k}, {j}) has no predecessor in level {k - 1}")
                for p, q in preds:
                    width = 1 if p == 0 else len(self.levels[p - 1]) if 0 < p < k else 0
                    if not 0 <= q < width:
                        raise ValueError(f"unit ({k}, {j}) has an invalid predecessor ({p}, {q})")
                if any(not 0 <= i < j for i in self.laterals[k - 1][j]):
                    raise ValueError(f"unit ({k}, {j}) has a lateral input from a later unit")

    @property
    def connections(self) -> int:
        """Number of predecessor connections (input edges included, laterals excluded)."""
        return sum(len(preds) for level in self.inputs for preds in level)

    @property
    def lateral_connections(self) -> int:
        """Number of lateral connections."""
        return sum(len(lat) for level in self.laterals for lat in level)

    def live_units(self) -> frozenset[tuple[int, int]]:
        """The units ``(level, index)`` whose output reaches the model's output: every unit of
        the last level and, recursively, what feeds a live unit. A unit that feeds nothing
        can still be sampled; it changes no prediction, so it is left out of parameter counts
        (a Keras model leaves it out altogether)."""
        live = {(len(self.levels), j) for j in range(len(self.levels[-1]))}
        # Backwards: a unit's sources lie in earlier levels or, laterally, at lower indices.
        for k in range(len(self.levels), 0, -1):
            for j in reversed(range(len(self.levels[k - 1]))):
                if (k, j) in live:
                    live.update(p for p in self.inputs[k - 1][j] if p[0] > 0)
                    live.update((k, i) for i in self.laterals[k - 1][j])
        return frozenset(live)

    def to_dict(self) -> dict:
        """A JSON-ready description (lists only)."""
        return {
            "levels": [list(level) for level in self.levels],
            "inputs": [[[list(p) for p in preds] for preds in level] for level in self.inputs],
            "laterals": [[list(lat) for lat in level] for level in self.laterals],
            "activation": self.activation,
            "learning_rate": self.learning_rate,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Architecture:
        """The inverse of :meth:`to_dict`."""
        return cls(
            levels=tuple(tuple(int(n) for n in level) for level in data["levels"]),
            inputs=tuple(
                tuple(tuple((int(p), int(q)) for p, q in preds) for preds in level)
                for level in data["inputs"]
            ),
            laterals=tuple(
                tuple(tuple(int(i) for i in lat) for lat in level) for level in data["laterals"]
            ),
            activation=str(data["activation"]),
            learning_rate=float(data["learning_rate"]),
        )

    @property
    def candidate_id(self) -> str:
        """A short stable hash (12 hex digits) of the whole candidate (graph, activation, lr)."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def summary(self) -> dict:
        """The compact summary reported in a trial's ``parameters``."""
        return {
            "levels": [list(level) for level in self.levels],
            "activation": self.activation,
            "learning_rate": self.learning_rate,
            "connections": self.connections,
            "lateral_connections": self.lateral_connections,
        }


class Choices(Protocol):
    """Where the *shape* of an architecture comes from: the count of levels, of units per
    level and of neurons per unit, the activation and the learning rate. The connections
    are always drawn from the trial's seeded generator (see :func:`build_architecture`).
    """

    def levels(self, low: int, high: int) -> int:
        """The number of levels, in ``[low, high]``."""
        ...

    def units(self, level: int, low: int, high: int) -> int:
        """The number of units of ``level`` (1-based), in ``[low, high]``."""
        ...

    def neurons(self, level: int, units: int, low: int, high: int) -> list[int]:
        """The neuron count of each of the ``units`` units of ``level``, in ``[low, high]``."""
        ...

    def activation(self, names: list[str]) -> str:
        """One of ``names``."""
        ...

    def learning_rate(self, low: float, high: float) -> float:
        """A learning rate in ``[low, high]`` (log-uniform prior)."""
        ...


class RandomChoices:
    """Every choice drawn from ``rng`` (the ``random`` strategy), in the order
    :func:`build_architecture` asks, interleaved with its connection draws."""

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng

    def levels(self, low: int, high: int) -> int:
        return int(self._rng.integers(low, high + 1))

    def units(self, level: int, low: int, high: int) -> int:
        return int(self._rng.integers(low, high + 1))

    def neurons(self, level: int, units: int, low: int, high: int) -> list[int]:
        return [int(n) for n in self._rng.integers(low, high + 1, units)]

    def activation(self, names: list[str]) -> str:
        return str(names[int(self._rng.integers(len(names)))])

    def learning_rate(self, low: float, high: float) -> float:
        return float(math.exp(self._rng.uniform(math.log(low), math.log(high))))


def seeded_rng(seed: int, stream: int) -> np.random.Generator:
    """An independent PCG64 generator for one purpose (``stream``) of one seed."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, stream])))


def sample_architecture(space: Mapping[str, Any], seed: int) -> Architecture:
    """Sample one architecture from a *normalised* space, deterministically from ``seed``
    (the ``random`` strategy)."""
    rng = seeded_rng(seed, ARCH_STREAM)
    return build_architecture(space, RandomChoices(rng), rng)


def build_architecture(
    space: Mapping[str, Any], choices: Choices, rng: np.random.Generator
) -> Architecture:
    """An architecture of a *normalised* space: its shape from ``choices``, its connections
    drawn from ``rng``."""
    n_levels = choices.levels(space["minimum_levels"], space["maximum_levels"])
    levels: list[tuple[int, ...]] = []
    for k in range(1, n_levels + 1):
        n_units = choices.units(
            k, space["minimum_units_per_level"], space["maximum_units_per_level"]
        )
        neurons = choices.neurons(
            k, n_units, space["minimum_neurons_per_unit"], space["maximum_neurons_per_unit"]
        )
        levels.append(tuple(neurons))
    p_pred = space["p_predecessor_connection"]
    p_lat = space["p_lateral_connection"]
    inputs: list[tuple[tuple[Unit, ...], ...]] = []
    laterals: list[tuple[tuple[int, ...], ...]] = []
    for k in range(1, n_levels + 1):
        candidates: list[Unit] = [(0, 0)] + [
            (p, q) for p in range(1, k) for q in range(len(levels[p - 1]))
        ]
        level_inputs: list[tuple[Unit, ...]] = []
        level_laterals: list[tuple[int, ...]] = []
        for j in range(len(levels[k - 1])):
            draws = rng.random(len(candidates))
            chosen = {c for c, d in zip(candidates, draws, strict=True) if d < p_pred}
            previous = [c for c in candidates if c[0] == k - 1]
            forced = previous[int(rng.integers(len(previous)))]
            if not any(c[0] == k - 1 for c in chosen):
                chosen.add(forced)
            level_inputs.append(tuple(sorted(chosen)))
            lateral_draws = rng.random(j)
            level_laterals.append(tuple(i for i in range(j) if lateral_draws[i] < p_lat))
        inputs.append(tuple(level_inputs))
        laterals.append(tuple(level_laterals))
    activation = choices.activation(list(space["activation"]))
    low, high = space["learning_rate"]
    learning_rate = choices.learning_rate(low, high)
    if learning_rate > high:  # guard the float round trip of exp(log(x))
        learning_rate = float(high)
    learning_rate = max(learning_rate, float(low))
    return Architecture(
        levels=tuple(levels),
        inputs=tuple(inputs),
        laterals=tuple(laterals),
        activation=activation,
        learning_rate=learning_rate,
    )


def mlp_architecture(layer_sizes: list[int], activation: str, learning_rate: float) -> Architecture:
    """A plain MLP (one unit per level, each fed only by the previous level, no laterals)."""
    n = len(layer_sizes)
    return Architecture(
        levels=tuple((int(size),) for size in layer_sizes),
        inputs=tuple((((k - 1, 0),),) for k in range(1, n + 1)),
        laterals=tuple(((),) for _ in range(n)),
        activation=activation,
        learning_rate=float(learning_rate),
    )
