"""Search strategies and pruning side by side, at the same wall-clock budget (issue 14).

For each dataset and seed, in one go and on the same data (the same split, seeded by the
seed, from ``cerebros_service.nas.datasets.load_dataset``):

* ``random``    — ``cerebros-bridge run`` with ``[search] strategy = "random"``;
* ``tpe``       — the same with ``strategy = "tpe"`` and no pruner (pruning's reference);
* ``tpe+asha``  — ``strategy = "tpe"``, ``pruner = "asha"``;
* ``optuna+mlp`` — Optuna's TPE sampler + MedianPruner driving scikit-learn's
  ``MLPClassifier`` (``partial_fit`` once per epoch, so it can be pruned), one process per
  parallel trial sharing the study through Optuna's journal file, over the same ranges:
  hidden layers ``[minimum_levels, maximum_levels]``, each of width
  ``[minimum_units_per_level * minimum_neurons_per_unit,
  maximum_units_per_level * maximum_neurons_per_unit]``, the same activations
  (those both sides implement: relu, tanh), the same log-uniform learning rate, batch
  size, epochs and patience (early stop on the validation loss; the reported accuracy is
  the one at the best validation-loss epoch, as our trainer reports).

Every side gets ``--budget`` seconds of trials: our runs through ``[budget] max_seconds`` (no
trial starts once it is spent; running ones finish; counted once the dataset is loaded),
Optuna through ``study.optimize(timeout=...)`` (the same rule), with ``--parallelism`` trials
at once on both sides, each in its own Python process: ours in the ``worker_process`` mode,
Optuna's as processes sharing one journal-file study. (Threads would not do: two numpy
trainings in one interpreter contend for its GIL and finish fewer trials than one at a
time.) Both sides train with one BLAS thread per trial (ours by default, Optuna's through
``threadpoolctl``). MLflow sync is off for our runs (``MLFLOW_TRACKING_URI=off``) so both
sides only train.

Prints, per dataset and side: the median best val_accuracy over the seeds (min–max), the
median number of trials completed (pruned ones included) and pruned, and the median wall time
of the whole run; ``--json FILE`` writes every measurement.

    .venv/bin/python benches/search_compare.py --budget 60            # the issue's setting
    .venv/bin/python benches/search_compare.py --budget 10 --seeds 2 --datasets digits

Needs the release (or debug) binary: ``cargo build --release`` (``--binary`` to choose).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))

#: The datasets compared: name -> (dataset id, dataset options).
DATASETS = {
    "digits": ("sklearn:digits", {}),
    "synthetic": (
        "synthetic:classification",
        {"samples": 20000, "features": 40, "informative": 10, "classes": 5},
    ),
}

#: Our sides: name -> [search] table.
OURS = {
    "random": {"strategy": "random", "pruner": "none"},
    "tpe": {"strategy": "tpe", "pruner": "none"},
    "tpe+asha": {"strategy": "tpe", "pruner": "asha"},
}
ANCHOR = "optuna+mlp"

#: The search space of every side (DESIGN §4's example; activations both sides implement).
SPACE = {
    "minimum_levels": 1,
    "maximum_levels": 3,
    "minimum_units_per_level": 1,
    "maximum_units_per_level": 3,
    "minimum_neurons_per_unit": 8,
    "maximum_neurons_per_unit": 64,
    "activation": ["relu", "tanh"],
    "learning_rate": [0.001, 0.01],
}


def toml_value(value) -> str:
    return json.dumps(value)  # strings, numbers and lists of them read the same in TOML


def spec_text(dataset: str, options: dict, seed: int, search: dict, args) -> str:
    lines = [
        f'name = "compare-{seed}"',
        f"dataset = {toml_value(dataset)}",
        'objective = "val_accuracy"',
        f"seed = {seed}",
        "[dataset_options]",
        *(f"{k} = {toml_value(v)}" for k, v in options.items()),
        "[search_space]",
        *(f"{k} = {toml_value(v)}" for k, v in SPACE.items()),
        "[budget]",
        "trials = 100000",
        f"epochs = {args.epochs}",
        f"batch_size = {args.batch_size}",
        f"patience = {args.patience}",
        f"parallelism = {args.parallelism}",
        f"max_seconds = {args.budget}",
        f"trial_timeout_ms = {max(60_000, args.budget * 2000)}",
        "[search]",
        *(f"{k} = {toml_value(v)}" for k, v in search.items()),
    ]
    return "\n".join(lines) + "\n"


def run_ours(side: str, dataset: str, options: dict, seed: int, args) -> dict:
    doc, wall = run_document(side, dataset, options, seed, args)
    statuses = [t["status"] for t in doc["trials"]]
    return {
        "best": doc["run"]["best_metric"],
        "completed": doc["run"]["trials_completed"],
        "pruned": statuses.count("pruned"),
        "wall_s": wall,
    }


def run_document(side: str, dataset: str, options: dict, seed: int, args) -> tuple[dict, float]:
    """``cerebros-bridge run --json`` of one of our sides: its document (the run and every
    trial, curves included) and the command's wall time in seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp, "spec.toml")
        spec.write_text(spec_text(dataset, options, seed, OURS[side], args))
        env = dict(
            os.environ,
            CEREBROS_STORE_URL=f"sqlite://{tmp}/store.db",
            CEREBROS_MODE="worker_process",
            MLFLOW_TRACKING_URI="off",
        )
        started = time.perf_counter()
        done = subprocess.run(
            [args.binary, "run", str(spec), "--json"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{side} seed {seed} failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout), wall


def run_anchor(dataset: str, options: dict, seed: int, args) -> dict:
    """Optuna's TPE + MedianPruner driving ``MLPClassifier``: ``--parallelism`` processes
    sharing one study through Optuna's journal file storage (Optuna's way to run trials in
    parallel without threads contending for one interpreter's GIL)."""
    import multiprocessing

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        journal = str(Path(tmp, "journal.log"))
        storage = _journal_storage(journal)
        study = optuna.create_study(study_name="anchor", storage=storage, direction="maximize")
        started = time.perf_counter()
        context = multiprocessing.get_context("spawn")
        workers = [
            context.Process(
                target=_anchor_worker,
                args=(journal, dataset, options, seed, worker, vars(args)),
            )
            for worker in range(args.parallelism)
        ]
        for process in workers:
            process.start()
        for process in workers:
            process.join()
        wall = time.perf_counter() - started
        if any(process.exitcode != 0 for process in workers):
            raise RuntimeError(f"anchor seed {seed}: a worker process failed")
        trials = study.get_trials(deepcopy=False)
        best = study.best_value
    states = [t.state for t in trials]
    done = optuna.trial.TrialState
    return {
        "best": best,
        "completed": states.count(done.COMPLETE) + states.count(done.PRUNED),
        "pruned": states.count(done.PRUNED),
        "wall_s": wall,
    }


def _journal_storage(path: str):
    import optuna

    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))


def _anchor_worker(
    journal: str, dataset: str, options: dict, seed: int, worker: int, args: dict
) -> None:
    """One process of the anchor: loads the data, then runs trials until the budget ends."""
    import numpy as np
    import optuna
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits

    sys.path.insert(0, str(ROOT / "python"))
    from cerebros_service.nas.datasets import load_dataset

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = load_dataset(dataset, {"validation_split": 0.2, **options}, seed)
    classes = np.unique(data.y_train)
    low_width = SPACE["minimum_units_per_level"] * SPACE["minimum_neurons_per_unit"]
    high_width = SPACE["maximum_units_per_level"] * SPACE["maximum_neurons_per_unit"]
    lr_low, lr_high = SPACE["learning_rate"]
    epochs, patience, batch_size = args["epochs"], args["patience"], args["batch_size"]

    def objective(trial: optuna.Trial) -> float:
        n_layers = trial.suggest_int("layers", SPACE["minimum_levels"], SPACE["maximum_levels"])
        layers = tuple(
            trial.suggest_int(f"width_{k}", low_width, high_width) for k in range(n_layers)
        )
        model = MLPClassifier(
            hidden_layer_sizes=layers,
            activation=trial.suggest_categorical("activation", SPACE["activation"]),
            solver="adam",
            batch_size=batch_size,
            learning_rate_init=trial.suggest_float("learning_rate", lr_low, lr_high, log=True),
            random_state=seed * 1000 + trial.number,
        )
        best_loss, best_accuracy, wait = math.inf, 0.0, 0
        for epoch in range(1, epochs + 1):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model.partial_fit(data.x_train, data.y_train, classes=classes)
            proba = np.clip(model.predict_proba(data.x_val), 1e-12, 1.0)
            loss = float(-np.mean(np.log(proba[np.arange(len(data.y_val)), data.y_val])))
            accuracy = float(np.mean(classes[proba.argmax(axis=1)] == data.y_val))
            if loss < best_loss:
                best_loss, best_accuracy, wait = loss, accuracy, 0
            else:
                wait += 1
            trial.report(accuracy, epoch)
            if epoch < epochs and trial.should_prune():
                raise optuna.TrialPruned()
            if wait >= patience:
                break
        return best_accuracy

    # One BLAS thread per trial, as our trainer uses: two processes each running a
    # multi-threaded BLAS on two cores would mostly wait for each other.
    threadpool_limits(limits=1, user_api="blas")
    study = optuna.load_study(
        study_name="anchor",
        storage=_journal_storage(journal),
        sampler=optuna.samplers.TPESampler(seed=seed * 100 + worker),
        pruner=optuna.pruners.MedianPruner(),
    )
    study.optimize(objective, timeout=args["budget"])


def summary(rows: list[dict]) -> str:
    best = [r["best"] for r in rows]
    median = statistics.median
    return (
        f"{median(best):.4f} ({min(best):.4f}–{max(best):.4f}) | "
        f"{median(r['completed'] for r in rows):g} | {median(r['pruned'] for r in rows):g} | "
        f"{median(r['wall_s'] for r in rows):.1f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=60, help="seconds of trials per run")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    sides = [*OURS, ANCHOR]
    parser.add_argument("--sides", nargs="+", choices=sides, default=sides)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--binary", default=str(ROOT / "target/release/cerebros-bridge"))
    parser.add_argument("--json", type=Path, help="write every measurement to this file")
    args = parser.parse_args()
    if not Path(args.binary).is_file():
        parser.error(f"{args.binary} is missing: cargo build --release (or pass --binary)")
    results: dict[str, dict[str, list[dict]]] = {}
    for name in args.datasets:
        dataset, options = DATASETS[name]
        results[name] = {side: [] for side in args.sides}
        for seed in range(1, args.seeds + 1):
            for side in args.sides:
                if side == ANCHOR:
                    row = run_anchor(dataset, options, seed, args)
                else:
                    row = run_ours(side, dataset, options, seed, args)
                results[name][side].append({"seed": seed, **row})
                print(f"{name} seed {seed} {side}: {row}", file=sys.stderr, flush=True)
    print(
        f"\nbudget {args.budget} s of trials per run, {args.seeds} seeds, epochs {args.epochs},"
        f" batch {args.batch_size}, patience {args.patience}, parallelism {args.parallelism}\n"
    )
    print("| dataset | side | best val_accuracy median (min–max) | trials | pruned | wall s |")
    print("|---|---|---|---:|---:|---:|")
    for name, sides_rows in results.items():
        for side, rows in sides_rows.items():
            print(f"| {name} | {side} | {summary(rows)} |")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"args": vars(args) | {"json": str(args.json)}, "results": results}, indent=2
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
