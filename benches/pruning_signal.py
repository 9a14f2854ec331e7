"""How well a trial's early epochs predict its result: what a pruner's rungs can see (issue 14).

Runs our ``random`` search without pruning (``search_compare``'s setting: the same spec,
budget, epochs and data), then, over its finished trials, prints for each epoch ``k``:

* the Spearman rank correlation between the objective after epoch ``k`` (the value a
  pruner's rung compares) and the trial's reported result;
* where the run's ``--top`` best trials stood after epoch ``k``: the share of trials that
  were ahead of each (0.00 = first). Successive halving with reduction factor ``r`` keeps a
  trial at a rung only if fewer than ``1/r`` of the trials were ahead of it there.

    .venv/bin/python benches/pruning_signal.py --dataset synthetic --seed 1
    .venv/bin/python benches/pruning_signal.py --dataset digits --budget 30

Needs the release binary, as ``search_compare`` does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from search_compare import DATASETS, ROOT, run_document  # noqa: E402

OBJECTIVE = "val_accuracy"


def ranks(values: np.ndarray) -> np.ndarray:
    """Each value's rank, 0 for the smallest (ties broken by position)."""
    order = np.argsort(values, kind="stable")
    result = np.empty(len(values))
    result[order] = np.arange(len(values))
    return result


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=list(DATASETS), default="synthetic")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--budget", type=int, default=60, help="seconds of trials")
    parser.add_argument("--top", type=int, default=5, help="how many best trials to follow")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--binary", default=str(ROOT / "target/release/cerebros-bridge"))
    args = parser.parse_args()
    if not Path(args.binary).is_file():
        parser.error(f"{args.binary} is missing: cargo build --release (or pass --binary)")
    dataset, options = DATASETS[args.dataset]
    doc, _ = run_document("random", dataset, options, args.seed, args)
    trials = [t for t in doc["trials"] if t["status"] == "succeeded"]
    result = np.array([t["metrics"][OBJECTIVE] for t in trials])
    curves = [t["metrics"]["curve"][OBJECTIVE] for t in trials]
    top = np.argsort(-result, kind="stable")[: args.top]
    print(
        f"{args.dataset}, seed {args.seed}: {len(trials)} trials in {args.budget} s;"
        f" best {OBJECTIVE} {result[top[0]]:.4f}\n"
    )
    print(f"| epoch | trials there | Spearman with the result | top {args.top}: share ahead |")
    print("|---:|---:|---:|---|")
    for epoch in range(1, args.epochs):
        there = [i for i, curve in enumerate(curves) if len(curve) >= epoch]
        values = np.array([curves[i][epoch - 1] for i in there])
        rho = spearman(values, result[there])
        ahead = []
        for i in top:
            if len(curves[i]) >= epoch:
                ahead.append(f"{float(np.mean(values > curves[i][epoch - 1])):.2f}")
            else:
                ahead.append("–")
        print(f"| {epoch} | {len(there)} | {rho:.2f} | {' '.join(ahead)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
