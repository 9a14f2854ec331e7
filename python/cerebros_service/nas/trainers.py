"""The trainer a spec's ``trainer`` key chooses: ``numpy`` (:mod:`.trainer`, the default)
or ``keras`` (:mod:`.keras_trainer`, an optional extra). Both train the same sampled
architecture on the same split with the same settings and report the same
:class:`~.trainer.TrainResult`; each writes its own artifact format (``.npz``, ``.keras``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import keras_trainer
from .artifacts import save_artifact
from .datasets import Dataset
from .network import EVAL_CHUNK, Network, training_bytes
from .rules import RULES, check_value
from .search_space import Architecture
from .trainer import TrainResult, blas_threads, one_training_at_a_time, train

__all__ = [
    "ARTIFACT_SUFFIX",
    "DEFAULT_TRIAL_MEMORY_MB",
    "Fitted",
    "check_trainer",
    "fit",
    "too_large",
]

#: The memory a trial's training may take when ``budget.trial_memory_mb`` is unset.
DEFAULT_TRIAL_MEMORY_MB = 4096
#: The share of the machine's memory one trial may take, whatever the spec asks: several
#: trials (processes, Ray tasks) train side by side on one machine.
MACHINE_SHARE = 4

#: The artifact file suffix of each trainer.
ARTIFACT_SUFFIX: dict[str, str] = {"numpy": ".npz", "keras": ".keras"}


@dataclass
class Fitted:
    """A trained candidate: the training's result, its trainable parameter count, and
    ``save(path, meta) -> (sha256, bytes)`` writing its artifact with ``meta``."""

    result: TrainResult
    n_params: int
    save: Callable[[Path, dict[str, Any]], tuple[str, int]]


def check_trainer(value: Any, key: str) -> str:
    """The trainer ``value`` names (``None``: the default), refused up front: a name that
    is not one (``contract`` naming ``key``), or ``keras`` without keras importable
    (``dependency`` naming ``trainer``, with the install command)."""
    rule = RULES["trainer"]
    name = rule["default"] if value is None else check_value(rule, value, key)
    if name == "keras":
        keras_trainer.require_keras()
    return name


def too_large(arch: Architecture, data: Dataset, budget: dict[str, int]) -> str | None:
    """Why ``arch`` is too large to train on this machine within ``budget``, or ``None``.

    A trial may take ``budget.trial_memory_mb`` (default :data:`DEFAULT_TRIAL_MEMORY_MB`),
    and never more than 1/:data:`MACHINE_SHARE` of the machine's memory: a search space
    allows networks of billions of weights, and one of them must fail as one trial, at once,
    rather than take the machine (and the host process with ``in_process``) down."""
    n_train, n_val = data.x_train.shape[0], data.x_val.shape[0]
    rows = max(min(budget["batch_size"], n_train), min(EVAL_CHUNK, n_val), 1)
    needed = training_bytes(arch, data.n_features, data.n_outputs, rows)
    requested = budget.get("trial_memory_mb") or DEFAULT_TRIAL_MEMORY_MB
    limit = requested * 2**20
    machine = _machine_bytes()
    if machine is not None:
        limit = min(limit, machine // MACHINE_SHARE)
    if needed <= limit:
        return None
    return (
        f"the sampled network needs about {needed / 2**20:,.0f} MiB to train "
        f"({len(arch.levels)} levels of {', '.join(str(len(level)) for level in arch.levels)} "
        f"units, up to {max(max(level) for level in arch.levels)} neurons each, over "
        f"{data.n_features} features), "
        f"more than the {limit / 2**20:,.0f} MiB a trial may use here (budget.trial_memory_mb, "
        f"default {DEFAULT_TRIAL_MEMORY_MB}, at most 1/{MACHINE_SHARE} of this machine's memory); "
        "lower search_space.maximum_neurons_per_unit, maximum_units_per_level or "
        "maximum_levels, or budget.batch_size"
    )


def _machine_bytes() -> int | None:
    """The machine's physical memory, where the platform says."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def fit(
    trainer: str,
    arch: Architecture,
    data: Dataset,
    *,
    budget: dict[str, int],
    seed: int,
    on_epoch: keras_trainer.EpochHook | None = None,
) -> Fitted:
    """Build ``arch`` for ``trainer``, initialise it from ``seed`` and train it within
    ``budget``, leaving the best epoch's weights."""
    settings = {
        "epochs": budget["epochs"],
        "batch_size": budget["batch_size"],
        "patience": budget["patience"],
        "learning_rate": arch.learning_rate,
        "seed": seed,
    }
    if trainer == "keras":
        model = keras_trainer.build_model(arch, data.n_features, data.n_outputs, seed)
        result = keras_trainer.train(model, data, **settings, on_epoch=on_epoch)
        return Fitted(
            result,
            keras_trainer.n_params(model),
            lambda path, meta: keras_trainer.save_model(
                path, model, data, {**meta, "trainer": "keras"}
            ),
        )
    net = Network(arch, data.n_features, data.n_outputs, data.task)
    with one_training_at_a_time(), blas_threads(), np.errstate(all="ignore"):
        result = train(net, data, **settings, on_epoch=on_epoch)
    arrays = {"x_mean": data.x_mean, "x_std": data.x_std}
    return Fitted(
        result,
        net.n_params,
        lambda path, meta: save_artifact(path, net, {**meta, "layout": net.layout()}, arrays),
    )
