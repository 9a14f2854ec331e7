"""Per-epoch time of the Keras trainer against the numpy trainer on digits.

    .venv/bin/python benches/trainer_epochs.py [--epochs 10] [--json]
        [--dataset sklearn:digits] [--option KEY=VALUE ...] [--batch 64]

``--dataset`` and ``--option`` pick another dataset the way a spec's ``dataset_id`` and
``[dataset_options]`` do (``--dataset synthetic:classification --option samples=20000``).

For each architecture (plain MLPs and candidates sampled from examples/digits.toml's search
space, laterals and skips included) both trainers train the same architecture on the same
split (batch 64 unless ``--batch`` says otherwise, the architecture's learning rate, no early
stopping) and every epoch is timed, the validation pass included:

* numpy: the whole ``train`` call divided by the epochs (nothing to compile);
* Keras: the model's build, the **first epoch** (JIT compilation of the train and predict
  steps dominates it) and the median of the later epochs (steady state), from the trainer's
  per-epoch hook.

The last column is Keras's steady epoch over numpy's (the issue's goal: within 3x). The
backend is JAX unless ``KERAS_BACKEND`` says otherwise; XLA uses every core, the numpy
trainer one BLAS thread (its default).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

from cerebros_service.nas import keras_trainer  # noqa: E402
from cerebros_service.nas.datasets import load_dataset  # noqa: E402
from cerebros_service.nas.network import Network  # noqa: E402
from cerebros_service.nas.search_space import (  # noqa: E402
    mlp_architecture,
    normalize_search_space,
    sample_architecture,
)
from cerebros_service.nas.trainer import blas_threads, train  # noqa: E402

DIGITS_SPACE = {
    "minimum_levels": 1,
    "maximum_levels": 3,
    "minimum_units_per_level": 1,
    "maximum_units_per_level": 3,
    "minimum_neurons_per_unit": 8,
    "maximum_neurons_per_unit": 64,
    "p_lateral_connection": 0.5,
    "activation": ["relu", "elu"],
    "learning_rate": [0.001, 0.01],
}
BATCH = 64  #: the default ``--batch``


def architectures() -> list[tuple[str, object]]:
    space = normalize_search_space(DIGITS_SPACE)
    named = [
        ("mlp 64", mlp_architecture([64], "relu", 0.003)),
        ("mlp 64-32", mlp_architecture([64, 32], "relu", 0.003)),
    ]
    for seed in (1, 2, 3):
        arch = sample_architecture(space, seed)
        levels = "/".join("+".join(str(n) for n in level) for level in arch.levels)
        named.append((f"sampled {levels}", arch))
    return named


def time_numpy(arch, data, epochs: int, batch: int) -> float:
    """Seconds per epoch of the numpy trainer (best of 3 whole trainings)."""
    best = float("inf")
    for _ in range(3):
        net = Network(arch, data.n_features, data.n_outputs, data.task)
        started = time.perf_counter()
        with blas_threads(), np.errstate(all="ignore"):
            result = train(
                net,
                data,
                epochs=epochs,
                batch_size=batch,
                patience=None,
                learning_rate=arch.learning_rate,
                seed=1,
            )
        best = min(best, (time.perf_counter() - started) / result.epochs_run)
    return best


def time_keras(arch, data, epochs: int, batch: int) -> dict[str, float]:
    """Build seconds, first-epoch seconds and the median later epoch of the Keras trainer."""
    started = time.perf_counter()
    model = keras_trainer.build_model(arch, data.n_features, data.n_outputs, seed=1)
    built = time.perf_counter()
    stamps = [built]

    def hook(epoch: int, scores: dict[str, float]) -> bool:
        stamps.append(time.perf_counter())
        return False

    keras_trainer.train(
        model,
        data,
        epochs=epochs,
        batch_size=batch,
        patience=None,
        learning_rate=arch.learning_rate,
        seed=1,
        on_epoch=hook,
    )
    durations = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    return {
        "build_s": built - started,
        "first_epoch_s": durations[0],
        "epoch_s": statistics.median(durations[1:]),
    }


def option(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` with VALUE read as JSON when it parses (numbers), else as text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--dataset", default="sklearn:digits")
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--option", action="append", default=[], type=option, metavar="KEY=VALUE")
    args = parser.parse_args()
    keras = keras_trainer.require_keras()
    data = load_dataset(args.dataset, dict(args.option), 42)
    rows = []
    for name, arch in architectures():
        numpy_s = time_numpy(arch, data, args.epochs, args.batch)
        row = {"architecture": name, "numpy_epoch_ms": numpy_s * 1e3}
        timed = time_keras(arch, data, args.epochs, args.batch)
        row.update(
            keras_build_ms=timed["build_s"] * 1e3,
            keras_first_epoch_ms=timed["first_epoch_s"] * 1e3,
            keras_epoch_ms=timed["epoch_s"] * 1e3,
        )
        row["ratio"] = row["keras_epoch_ms"] / row["numpy_epoch_ms"]
        rows.append(row)
    if args.json:
        doc = {
            "dataset": data.summary(),
            "backend": keras.backend.backend(),
            "devices": keras_trainer.devices(),
            "rows": rows,
        }
        print(json.dumps(doc, indent=2))
        return
    print(
        f"{args.dataset}, batch {args.batch}, {args.epochs} epochs, Keras backend "
        f"{keras.backend.backend()} on {keras_trainer.devices()}"
    )
    header = ["architecture", "numpy ms/ep", "keras build ms", "keras 1st ep ms", "keras ms/ep"]
    print(f"{header[0]:<24}" + "".join(f"{h:>17}" for h in header[1:]) + f"{'ratio':>8}")
    for row in rows:
        print(
            f"{row['architecture']:<24}{row['numpy_epoch_ms']:>17.1f}{row['keras_build_ms']:>17.0f}"
            f"{row['keras_first_epoch_ms']:>17.0f}{row['keras_epoch_ms']:>17.1f}"
            f"{row['ratio']:>8.2f}"
        )


if __name__ == "__main__":
    main()
