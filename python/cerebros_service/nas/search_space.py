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
from typing import Any

import numpy as np

from .checks import as_int, as_number, as_probability, contract_error

__all__ = [
    "ACTIVATIONS",
    "DEFAULT_SEARCH_SPACE",
    "Architecture",
    "normalize_search_space",
    "sample_architecture",
]

#: Activations the trainer implements.
ACTIVATIONS = ("relu", "elu", "tanh", "sigmoid", "gelu")

#: Defaults filled in by :func:`normalize_search_space` (the example of DESIGN §4).
DEFAULT_SEARCH_SPACE: dict[str, Any] = {
    "minimum_levels": 1,
    "maximum_levels": 3,
    "minimum_units_per_level": 1,
    "maximum_units_per_level": 3,
    "minimum_neurons_per_unit": 8,
    "maximum_neurons_per_unit": 64,
    "p_lateral_connection": 0.5,
    "p_predecessor_connection": 0.5,
    "activation": ["relu", "elu"],
    "learning_rate": [0.001, 0.01],
}

# (minimum key, maximum key, hard cap): the caps keep one trial within memory and time.
_RANGES = (
    ("minimum_levels", "maximum_levels", 32),
    ("minimum_units_per_level", "maximum_units_per_level", 32),
    ("minimum_neurons_per_unit", "maximum_neurons_per_unit", 4096),
)
_MAX_LEARNING_RATE = 1.0

# Seed streams derived from a trial seed (see ``trainer``): architecture sampling uses 1.
ARCH_STREAM = 1


def normalize_search_space(raw: Mapping[str, Any] | None, prefix: str = "search_space") -> dict:
    """Validate ``raw`` and return the complete search space, defaults filled.

    Idempotent: a normalised space normalises to itself. Raises ``OpError("contract", ...)``
    naming the key (``search_space.maximum_levels``) for unknown keys, non-integers, values
    below 1 or above the caps, a minimum above its maximum, probabilities outside [0, 1],
    unsupported activations and a learning rate that is not a ``[low, high]`` pair with
    ``0 < low <= high <= 1``.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise contract_error(prefix, f"must be a table/object, got {type(raw).__name__}")
    unknown = sorted(str(k) for k in raw if k not in DEFAULT_SEARCH_SPACE)
    if unknown:
        raise contract_error(
            f"{prefix}.{unknown[0]}",
            f"unknown search-space key (known: {', '.join(DEFAULT_SEARCH_SPACE)})",
        )
    merged = {**DEFAULT_SEARCH_SPACE, **{k: v for k, v in raw.items() if v is not None}}
    space: dict[str, Any] = {}
    for low_key, high_key, cap in _RANGES:
        low = as_int(merged[low_key], f"{prefix}.{low_key}", minimum=1, maximum=cap)
        high = as_int(merged[high_key], f"{prefix}.{high_key}", minimum=1, maximum=cap)
        if low > high:
            raise contract_error(
                f"{prefix}.{low_key}",
                f"must not exceed {prefix}.{high_key} ({low} > {high})",
            )
        space[low_key], space[high_key] = low, high
    for key in ("p_lateral_connection", "p_predecessor_connection"):
        space[key] = as_probability(merged[key], f"{prefix}.{key}")
    space["activation"] = _normalize_activation(merged["activation"], f"{prefix}.activation")
    space["learning_rate"] = _normalize_learning_rate(
        merged["learning_rate"], f"{prefix}.learning_rate"
    )
    return space


def _normalize_activation(value: Any, key: str) -> list[str]:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list | tuple) or not names:
        raise contract_error(
            key, f"must be an activation name or a non-empty list of them, got {value!r}"
        )
    result: list[str] = []
    for name in names:
        if not isinstance(name, str) or name.strip().lower() not in ACTIVATIONS:
            raise contract_error(
                key, f"unsupported activation {name!r} (supported: {', '.join(ACTIVATIONS)})"
            )
        name = name.strip().lower()
        if name not in result:
            result.append(name)
    return result


def _normalize_learning_rate(value: Any, key: str) -> list[float]:
    if isinstance(value, str) or not isinstance(value, list | tuple) or len(value) != 2:
        raise contract_error(key, f"must be a [low, high] pair, got {value!r}")
    low, high = (as_number(v, key) for v in value)
    if not 0.0 < low <= high:
        raise contract_error(key, f"must satisfy 0 < low <= high, got [{low!r}, {high!r}]")
    if high > _MAX_LEARNING_RATE:
        raise contract_error(key, f"high must be at most {_MAX_LEARNING_RATE}, got {high!r}")
    return [low, high]


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


def seeded_rng(seed: int, stream: int) -> np.random.Generator:
    """An independent PCG64 generator for one purpose (``stream``) of one seed."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, stream])))


def sample_architecture(space: Mapping[str, Any], seed: int) -> Architecture:
    """Sample one architecture from a *normalised* space, deterministically from ``seed``."""
    rng = seeded_rng(seed, ARCH_STREAM)
    n_levels = int(rng.integers(space["minimum_levels"], space["maximum_levels"] + 1))
    levels: list[tuple[int, ...]] = []
    for _ in range(n_levels):
        n_units = int(
            rng.integers(space["minimum_units_per_level"], space["maximum_units_per_level"] + 1)
        )
        neurons = rng.integers(
            space["minimum_neurons_per_unit"], space["maximum_neurons_per_unit"] + 1, n_units
        )
        levels.append(tuple(int(n) for n in neurons))
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
    activation = str(space["activation"][int(rng.integers(len(space["activation"])))])
    low, high = space["learning_rate"]
    learning_rate = float(math.exp(rng.uniform(math.log(low), math.log(high))))
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
