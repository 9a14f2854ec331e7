"""The trainer a spec's ``trainer`` key chooses: ``numpy`` (:mod:`.trainer`, the default)
or ``keras`` (:mod:`.keras_trainer`, an optional extra). Both train the same sampled
architecture on the same split with the same settings and report the same
:class:`~.trainer.TrainResult`; each writes its own artifact format (``.npz``, ``.keras``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import keras_trainer
from .artifacts import save_artifact
from .datasets import Dataset
from .network import Network
from .rules import RULES, check_value
from .search_space import Architecture
from .trainer import TrainResult, blas_threads, one_training_at_a_time, train

__all__ = ["ARTIFACT_SUFFIX", "Fitted", "check_trainer", "fit"]

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
