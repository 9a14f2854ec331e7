"""The Keras 3 trainer (``trainer = "keras"``): the sampled architecture as a functional model.

The model mirrors :mod:`.network`: unit ``j`` of level ``k`` is a ``Dense`` layer of its
neuron count over the concatenation (``Concatenate``, as Cerebros does) of its predecessor
units and its lateral sources; the output ``Dense`` reads the concatenation of the last
level's units. Initialisation follows the numpy trainer (He normal for relu, elu and gelu,
Glorot uniform for tanh and sigmoid and the output layer, zero biases), drawn with numpy from
the trial seed. One difference: Keras's ``gelu`` is the exact (erf)
one where the numpy trainer uses the tanh approximation.

Training mirrors :mod:`.trainer`: the same split and standardisation, Adam (the
architecture's learning rate, beta 0.9/0.999, epsilon 1e-8), the spec's batch size, rows
shuffled each epoch from the trial seed, the validation split scored after every epoch by
the same formulas (:func:`.trainer.scores`), early stopping after ``patience`` epochs without
a lower validation loss, a stop on a non-finite loss, and the best epoch's weights restored.
Randomness comes only from seeds (``keras.utils.set_random_seed`` too), so concurrent
trials in one process do not disturb each other.

The backend is JAX unless ``KERAS_BACKEND`` names another (set before keras is first
imported, which only this module does); a GPU is used when the backend sees one.

The artifact ``<trial_id>.keras`` is a model over **raw** input rows: a ``Normalization``
layer holds the training split's mean and variance, then the trained network; it outputs
logits (classification; the class index's label is ``meta["classes"]``) or the target in
its own units (regression, a ``Rescaling`` layer undoes the standardisation). It loads with
``keras.saving.load_model(path)`` alone; the zip also holds ``cerebros_meta.json``, the same
metadata as an ``.npz`` artifact's ``meta`` (:mod:`.artifacts`).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .._dispatch import OpError
from .artifacts import write_atomically
from .datasets import Dataset
from .rules import RULES
from .search_space import Architecture, seeded_rng
from .trainer import BETA1, BETA2, EPSILON, INIT_STREAM, SHUFFLE_STREAM, TrainResult, scores

__all__ = [
    "META_ENTRY",
    "build_model",
    "devices",
    "load_meta",
    "n_params",
    "require_keras",
    "save_model",
    "train",
]

#: The metadata entry added to a ``.keras`` artifact's zip.
META_ENTRY = "cerebros_meta.json"

_DEFAULT_BACKEND = "jax"
_PACKAGE = RULES["trainer_packages"]["keras"]
_PREDICT_BATCH = 4096
#: The variables by which a user tells JAX how to take GPU memory (left as they are).
_JAX_MEMORY_SETTINGS = (
    "XLA_PYTHON_CLIENT_PREALLOCATE",
    "XLA_CLIENT_MEM_FRACTION",
    "XLA_PYTHON_CLIENT_MEM_FRACTION",
    "XLA_PYTHON_CLIENT_ALLOCATOR",
)

EpochHook = Callable[[int, dict[str, float]], bool]


def _import_keras() -> Any:
    """keras, imported with the JAX backend unless ``KERAS_BACKEND`` names another.

    JAX on a GPU takes 75 % of the GPU's memory at its first operation unless told
    otherwise, and with parallel trials in processes (``worker_process``, Ray) the next
    process on that GPU runs out of memory (JAX's documentation names this case); so unless
    the environment sets how JAX allocates, it allocates as it needs (a candidate needs
    little)."""
    os.environ.setdefault("KERAS_BACKEND", _DEFAULT_BACKEND)
    if not any(name in os.environ for name in _JAX_MEMORY_SETTINGS):
        os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    import keras

    return keras


def require_keras() -> Any:
    """keras, or ``OpError("dependency")`` naming the ``trainer`` key and the install
    command when it (or its backend) cannot be imported."""
    try:
        return _import_keras()
    except Exception as exc:  # ImportError, or a backend that fails to load
        backend = os.environ.get("KERAS_BACKEND", _DEFAULT_BACKEND)
        raise OpError(
            "dependency",
            f"trainer: keras needs the {_PACKAGE['module']} package and its {backend} "
            f"backend, which cannot be imported ({type(exc).__name__}: {exc}); install "
            f"them with: {_PACKAGE['install']}",
            {"key": "trainer", "install": _PACKAGE["install"], "backend": backend},
        ) from exc


def devices() -> list[str] | None:
    """The devices the Keras backend computes on (``["cpu:0"]``, ``["gpu:0", "gpu:1"]``;
    ``[]`` when the backend cannot list them), or ``None`` when keras has not been imported
    in this process: looking never imports it, so a numpy-only service stays light."""
    keras = sys.modules.get("keras")
    if keras is None:
        return None
    try:
        return [str(device) for device in keras.distribution.list_devices()]
    except Exception:  # a backend without device listing (torch)
        return []


def build_model(arch: Architecture, n_inputs: int, n_outputs: int, seed: int) -> Any:
    """The functional model of ``arch`` over standardised inputs (raw outputs: logits or
    standardised predictions), its weights initialised from ``seed``."""
    keras = _import_keras()
    inputs = keras.Input(shape=(n_inputs,), name="features")
    outputs: dict[tuple[int, int], Any] = {(0, 0): inputs}

    def joined(sources: list[Any], name: str) -> Any:
        return sources[0] if len(sources) == 1 else keras.layers.Concatenate(name=name)(sources)

    for k, level in enumerate(arch.levels, start=1):
        for j, neurons in enumerate(level):
            sources = [outputs[u] for u in arch.inputs[k - 1][j]]
            sources += [outputs[(k, i)] for i in arch.laterals[k - 1][j]]
            outputs[(k, j)] = keras.layers.Dense(
                neurons,
                activation=arch.activation,
                kernel_initializer="zeros",
                name=f"unit_{k}_{j}",
            )(joined(sources, f"into_{k}_{j}"))
    last = len(arch.levels)
    top = joined([outputs[(last, j)] for j in range(len(arch.levels[-1]))], "into_output")
    logits = keras.layers.Dense(n_outputs, kernel_initializer="zeros", name="output")(top)
    model = keras.Model(inputs, logits, name="cerebros_candidate")
    model.set_weights(_initial_weights(model, arch.activation, seed))
    return model


def _initial_weights(model: Any, activation: str, seed: int) -> list[np.ndarray]:
    """The numpy trainer's initialisation, layer by layer (drawn with numpy: seeded,
    thread-safe, and without compiling a random kernel per shape): He normal (relu, elu,
    gelu) or Glorot uniform (tanh, sigmoid) kernels, a Glorot uniform output kernel, zero
    biases."""
    rng = seeded_rng(seed, INIT_STREAM)
    he = activation in ("relu", "elu", "gelu")
    weights: list[np.ndarray] = []
    for layer in model.layers:
        if not layer.weights:
            continue
        fan_in, fan_out = layer.kernel.shape
        if he and layer.name != "output":
            kernel = rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)
        else:
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            kernel = rng.uniform(-limit, limit, (fan_in, fan_out))
        weights += [kernel.astype(np.float32), np.zeros(fan_out, dtype=np.float32)]
    return weights


def n_params(model: Any) -> int:
    """The model's trainable parameters: the numpy network's count for the same
    architecture, less the units no later unit reads (a dead end is not in the Keras graph,
    where the numpy network computes it)."""
    return int(sum(math.prod(w.shape) for w in model.trainable_weights))


def train(
    model: Any,
    data: Dataset,
    *,
    epochs: int,
    batch_size: int,
    patience: int | None,
    learning_rate: float,
    seed: int,
    on_epoch: EpochHook | None = None,
) -> TrainResult:
    """Train ``model`` on ``data`` as :func:`.trainer.train` trains a network; leave the best
    epoch's weights in it.

    ``on_epoch(epoch, {"val_loss", "val_accuracy" or "val_rmse", "train_loss"})`` is called
    after each epoch (1-based) with finite values; returning ``True`` stops training and
    marks the result ``pruned``.
    """
    keras = _import_keras()
    keras.utils.set_random_seed(seed % 2**32)
    classification = data.task == "classification"
    n = data.x_train.shape[0]
    batch_size = max(1, min(int(batch_size), n))
    model.compile(
        optimizer=keras.optimizers.Adam(
            learning_rate=learning_rate, beta_1=BETA1, beta_2=BETA2, epsilon=EPSILON
        ),
        loss=(
            keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            if classification
            else keras.losses.MeanSquaredError()
        ),
        # One compiled execution runs the whole epoch's steps: the same updates as step by
        # step, without Python's overhead per mini-batch (about 7x faster on digits).
        steps_per_execution=-(-n // batch_size),
    )
    shuffle_rng = seeded_rng(seed, SHUFFLE_STREAM)
    targets = data.y_train if classification else data.y_train.reshape(n, 1)
    metric = "val_accuracy" if classification else "val_rmse"
    best_weights = model.get_weights()
    best_loss = math.inf
    wait = 0
    result = TrainResult(epochs_run=0, best_epoch=0)
    for epoch in range(1, epochs + 1):
        order = shuffle_rng.permutation(n)
        history = model.fit(
            data.x_train[order],
            targets[order],
            batch_size=batch_size,
            epochs=1,
            shuffle=False,
            verbose=0,
        )
        train_loss = float(history.history["loss"][-1])
        val_loss, val_metric = scores(_outputs(model, data.x_val), data)
        result.epochs_run = epoch
        result.train_loss.append(train_loss)
        result.val_loss.append(val_loss)
        result.val_metric.append(val_metric)
        if not all(math.isfinite(v) for v in (train_loss, val_loss, val_metric)):
            result.diverged = True
            break
        if val_loss < best_loss:
            best_loss = val_loss
            result.best_epoch = epoch
            best_weights = model.get_weights()
            wait = 0
        else:
            wait += 1
        report = {"val_loss": val_loss, metric: val_metric, "train_loss": train_loss}
        if on_epoch is not None and on_epoch(epoch, report):
            result.pruned = True
            break
        if patience is not None and wait > 0 and wait >= patience:
            result.stopped_early = epoch < epochs
            break
    model.set_weights(best_weights)
    return result


def _outputs(model: Any, x: np.ndarray) -> np.ndarray:
    """The model's raw outputs for ``x``, in chunks (one compiled call each)."""
    chunks = [
        np.asarray(model.predict_on_batch(x[i : i + _PREDICT_BATCH]), dtype=np.float32)
        for i in range(0, x.shape[0], _PREDICT_BATCH)
    ]
    return np.concatenate(chunks)


def save_model(path: Path, model: Any, data: Dataset, meta: dict[str, Any]) -> tuple[str, int]:
    """Write the artifact (the inference model over raw rows, and ``meta``) atomically to
    ``path``; return (sha256, bytes)."""
    keras = _import_keras()
    raw = keras.Input(shape=(data.n_features,), name="raw_features")
    scaled = keras.layers.Normalization(
        mean=data.x_mean.astype(np.float32),
        variance=np.square(data.x_std).astype(np.float32),
        name="standardise",
    )(raw)
    out = model(scaled)
    if data.task == "regression":
        out = keras.layers.Rescaling(scale=data.y_std, offset=data.y_mean, name="target_units")(out)
    exported = keras.Model(raw, out, name="cerebros_trial")
    with tempfile.TemporaryDirectory(prefix="cerebros-keras-") as scratch:
        staged = Path(scratch) / "model.keras"
        try:
            exported.save(staged)
            blob = staged.read_bytes()
        except OSError as exc:
            raise OpError(
                "system_error",
                f"cannot stage the Keras model in {scratch}: {exc.strerror or exc}",
                {"path": str(staged)},
            ) from exc
    memory = io.BytesIO(blob)
    with zipfile.ZipFile(memory, "a") as archive:
        archive.writestr(META_ENTRY, json.dumps(meta, sort_keys=True))
    return write_atomically(path, memory.getvalue())


def load_meta(path: str | Path) -> dict[str, Any]:
    """The ``meta`` of a ``.keras`` artifact."""
    with contextlib.closing(zipfile.ZipFile(Path(str(path).removeprefix("file://")))) as zf:
        return json.loads(zf.read(META_ENTRY))
