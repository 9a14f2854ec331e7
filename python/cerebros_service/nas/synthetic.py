"""``synthetic:classification`` and ``synthetic:regression``: scikit-learn's generators.

Options (``dataset_options``, defaults in ``spec_rules.json`` under ``synthetic_datasets``):

* ``samples``, ``features``: the rows and columns generated;
* ``informative``: the columns the target depends on (the others are pure noise; at most
  ``features``);
* ``classes`` (classification only): the number of classes, two Gaussian clusters each
  (``make_classification``'s default), so ``2 * classes <= 2 ** informative``;
* ``noise``: classification — the fraction of labels drawn at random (``flip_y``, in
  [0, 1]); regression — the standard deviation of the Gaussian noise on the target.

The data is drawn from the run seed, so one seed gives the same rows everywhere. The host
(``src/nas/spec/synthetic.rs``) checks the same rules before a run starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .checks import contract_error
from .rules import RULES
from .search_space import seeded_rng

__all__ = ["SYNTHETIC_DEFAULTS", "SYNTHETIC_OPTIONS", "check_synthetic_options", "generate"]

#: The defaults of each generator's options, by generator name (= its task).
SYNTHETIC_DEFAULTS: dict[str, dict[str, Any]] = {
    name: dict(options) for name, options in RULES["synthetic_datasets"].items()
}
#: Every option a synthetic generator accepts (refused for other datasets).
SYNTHETIC_OPTIONS: frozenset[str] = frozenset(
    key for options in SYNTHETIC_DEFAULTS.values() for key in options
)
_MAX_VALUES: int = RULES["synthetic_max_values"]
_CLUSTERS_PER_CLASS = 2
_DATA_STREAM = 0xDA7A


def check_synthetic_options(name: str, opts: Mapping[str, Any]) -> dict[str, Any]:
    """The options of generator ``name`` (already checked one by one), defaults filled and
    checked together; a problem names its key (``dataset_options.informative``)."""
    defaults = SYNTHETIC_DEFAULTS[name]
    for key in sorted(SYNTHETIC_OPTIONS - defaults.keys()):
        if key in opts:
            users = " and ".join(f"synthetic:{user}" for user in _users(key))
            raise contract_error(f"dataset_options.{key}", f"applies to {users} only")
    if opts.get("task", name) != name:
        raise contract_error(
            "dataset_options.task", f"synthetic:{name} is a {name} dataset, not {opts['task']}"
        )
    chosen = {key: opts.get(key, default) for key, default in defaults.items()}
    if chosen["informative"] > chosen["features"]:
        raise contract_error(
            "dataset_options.informative",
            f"must not exceed dataset_options.features "
            f"({chosen['informative']} > {chosen['features']})",
        )
    if chosen["samples"] * chosen["features"] > _MAX_VALUES:
        raise contract_error(
            "dataset_options.samples",
            f"samples x features must be at most {_MAX_VALUES}, "
            f"got {chosen['samples']} x {chosen['features']}",
        )
    if name == "classification":
        if chosen["noise"] > 1:
            raise contract_error(
                "dataset_options.noise",
                f"is the fraction of labels drawn at random: must be in [0, 1], "
                f"got {chosen['noise']}",
            )
        if chosen["samples"] < _CLUSTERS_PER_CLASS * chosen["classes"]:
            raise contract_error(
                "dataset_options.samples",
                f"must be at least 2 x classes = {_CLUSTERS_PER_CLASS * chosen['classes']}, "
                f"got {chosen['samples']}",
            )
        if _CLUSTERS_PER_CLASS * chosen["classes"] > 2 ** chosen["informative"]:
            raise contract_error(
                "dataset_options.classes",
                f"{chosen['classes']} classes of 2 clusters need 2 x classes <= "
                f"2 ** informative ({chosen['informative']} informative features)",
            )
    return chosen


def _users(key: str) -> list[str]:
    return [name for name, options in SYNTHETIC_DEFAULTS.items() if key in options]


def generate(name: str, opts: Mapping[str, Any], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows ``(X, y)`` of generator ``name`` for checked ``opts``, drawn from ``seed``."""
    from sklearn import datasets as sk_datasets

    chosen = check_synthetic_options(name, opts)
    random_state = int(seeded_rng(seed, _DATA_STREAM).integers(2**32))
    common = {
        "n_samples": chosen["samples"],
        "n_features": chosen["features"],
        "n_informative": chosen["informative"],
        "random_state": random_state,
    }
    if name == "classification":
        x, y = sk_datasets.make_classification(
            **common,
            n_classes=chosen["classes"],
            n_redundant=0,
            n_repeated=0,
            n_clusters_per_class=_CLUSTERS_PER_CLASS,
            flip_y=chosen["noise"],
        )
    else:
        x, y = sk_datasets.make_regression(**common, noise=chosen["noise"])
    return np.asarray(x, dtype=np.float64), np.asarray(y)
