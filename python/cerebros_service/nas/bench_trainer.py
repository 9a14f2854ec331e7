"""Trainer benchmarks: ``python -m cerebros_service.nas.bench_trainer [--demo] [--json]``.

* **epoch time** — the numpy trainer against scikit-learn's ``MLPClassifier`` on digits, for
  plain MLPs (one unit per level, no lateral or skip connections) with the same hidden layer
  sizes, batch size, solver (adam), learning rate and number of epochs. Each side is timed
  over whole ``fit``/``train`` calls (best of ``--repeat``) and divided by the epochs run; the
  numpy side also evaluates the validation split after every epoch, sklearn's does not.
  Prints the ratio numpy / sklearn per network (lower is better for numpy).
* **demo** (``--demo``) — the host's demo run as a sequential loop over ``run_trial``: digits,
  16 trials, DESIGN §4's example search space, 10 epochs, batch 64, patience 3; prints the
  total time and the best val_accuracy. ``--threads 2`` runs the trials two at a time on two
  threads of this process.

Set ``OPENBLAS_NUM_THREADS`` (or ``CEREBROS_NAS_BLAS_THREADS``) in the environment to
compare BLAS thread counts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .datasets import load_dataset
from .network import Network
from .search_space import DEFAULT_SEARCH_SPACE, mlp_architecture
from .trainer import train

LAYERS = [(64,), (64, 32), (128, 64), (64, 64, 64)]
DEMO_SPACE = dict(DEFAULT_SEARCH_SPACE)  # the example of DESIGN §4


def _time_sklearn(data, layers, epochs: int, batch: int, lr: float, repeat: int) -> float:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    best = float("inf")
    for _ in range(repeat):
        model = MLPClassifier(
            hidden_layer_sizes=layers,
            activation="relu",
            solver="adam",
            batch_size=batch,
            learning_rate_init=lr,
            max_iter=epochs,
            tol=0.0,
            n_iter_no_change=epochs + 1,
            shuffle=True,
            random_state=0,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            start = time.perf_counter()
            model.fit(data.x_train, data.y_train)
            elapsed = time.perf_counter() - start
        best = min(best, elapsed / model.n_iter_)
    return best


def _time_numpy(data, layers, epochs: int, batch: int, lr: float, repeat: int) -> float:
    from .trainer import blas_threads

    arch = mlp_architecture(list(layers), "relu", lr)
    best = float("inf")
    for _ in range(repeat):
        net = Network(arch, data.n_features, data.n_outputs, data.task)
        with blas_threads(), np.errstate(all="ignore"):
            start = time.perf_counter()
            result = train(
                net, data, epochs=epochs, batch_size=batch, patience=None, learning_rate=lr, seed=0
            )
            elapsed = time.perf_counter() - start
        best = min(best, elapsed / result.epochs_run)
    return best


def bench_epochs(epochs: int, batch: int, repeat: int) -> list[dict]:
    """Epoch times of both trainers on digits for each network of :data:`LAYERS`."""
    data = load_dataset("sklearn:digits", {}, 42)
    rows = []
    for layers in LAYERS:
        sk = _time_sklearn(data, layers, epochs, batch, 1e-3, repeat)
        ours = _time_numpy(data, layers, epochs, batch, 1e-3, repeat)
        rows.append(
            {
                "layers": list(layers),
                "sklearn_ms_per_epoch": round(sk * 1000, 3),
                "numpy_ms_per_epoch": round(ours * 1000, 3),
                "ratio": round(ours / sk, 3),
            }
        )
    return rows


def demo(trials: int, threads: int, epochs: int = 10) -> dict:
    """The digits demo over ``run_trial``: total seconds and the best val_accuracy."""
    from .. import run_trial
    from .datasets import clear_cache

    clear_cache()
    with tempfile.TemporaryDirectory() as tmp:

        def one(index: int) -> dict:
            return run_trial(
                {
                    "run_id": "bench-demo",
                    "trial_id": f"trial-{index:03d}",
                    "index": index,
                    "seed": 1000 + index,
                    "dataset_id": "sklearn:digits",
                    "search_space": DEMO_SPACE,
                    "budget": {"epochs": epochs, "batch_size": 64, "patience": 3},
                    "parameters": {
                        "objective": "val_accuracy",
                        "direction": "maximize",
                        "run_seed": 42,
                        "artifact_dir": tmp,
                    },
                }
            )

        start = time.perf_counter()
        if threads > 1:
            with ThreadPoolExecutor(threads) as pool:
                reports = list(pool.map(one, range(trials)))
        else:
            reports = [one(i) for i in range(trials)]
        total = time.perf_counter() - start
    accuracies = [r["metrics"].get("val_accuracy", 0.0) for r in reports]
    return {
        "trials": trials,
        "threads": threads,
        "total_s": round(total, 3),
        "mean_trial_ms": round(float(np.mean([r["duration_ms"] for r in reports])), 1),
        "best_val_accuracy": max(accuracies),
        "val_accuracies": [round(a, 4) for a in accuracies],
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks and print a table (or one JSON document with ``--json``)."""
    parser = argparse.ArgumentParser(prog="python -m cerebros_service.nas.bench_trainer")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--demo", action="store_true", help="also run the 16-trial demo")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report: dict = {
        "env": {
            "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
            "CEREBROS_NAS_BLAS_THREADS": os.environ.get("CEREBROS_NAS_BLAS_THREADS"),
            "cpus": os.cpu_count(),
        },
        "epochs": bench_epochs(args.epochs, args.batch_size, args.repeat),
    }
    if args.demo:
        report["demo"] = demo(args.trials, args.threads, args.epochs)
    if args.json:
        json.dump(report, sys.stdout)
        print()
        return 0
    print(f"env: {report['env']}")
    print(f"{'layers':<16}{'sklearn ms/epoch':>18}{'numpy ms/epoch':>16}{'ratio':>8}")
    for row in report["epochs"]:
        print(
            f"{str(tuple(row['layers'])):<16}{row['sklearn_ms_per_epoch']:>18.2f}"
            f"{row['numpy_ms_per_epoch']:>16.2f}{row['ratio']:>8.2f}"
        )
    if args.demo:
        d = report["demo"]
        print(
            f"demo: {d['trials']} trials on {d['threads']} thread(s) in {d['total_s']:.2f} s, "
            f"mean trial {d['mean_trial_ms']:.0f} ms, best val_accuracy "
            f"{d['best_val_accuracy']:.4f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
