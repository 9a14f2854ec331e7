"""What planning one trial costs the service as a run's history grows (issue 14).

For each ``--history`` size, builds a run history like a ``tpe + asha`` digits run's (the
demo's search space; most trials pruned after 1 or 4 epochs, the rest trained for 10), then
times, in this process, what ``run_trial`` does before it trains: checking the history
(``check_history``) and planning the trial (``plan_trial``: the study rebuilt from the
history, TPE's suggestion and the pruner's hook). Prints the median over ``--repeat`` trials
(different seeds, same history) per size, after one warm-up trial.

    .venv/bin/python benches/suggestion_cost.py --history 100 400 800 --repeat 20
    CEREBROS_REPO=/path/to/other/python .venv/bin/python benches/suggestion_cost.py  # A/B
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

# The demo's search space, as the comparison uses it (its import puts this checkout's
# service on the path: CEREBROS_REPO goes before it below).
from search_compare import SPACE

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, os.environ.get("CEREBROS_REPO", str(ROOT / "python")))

from cerebros_service.nas.planning import plan_trial  # noqa: E402
from cerebros_service.nas.search_space import (  # noqa: E402
    normalize_search_space,
    sample_architecture,
)
from cerebros_service.nas.study import check_history  # noqa: E402

EPOCHS = 10
SEARCH = {"strategy": "tpe", "pruner": "asha"}


def history(size: int, space: dict) -> list[dict]:
    """``size`` finished trials as the host sends them (see ``nas/study.py``)."""
    rng = random.Random(size)
    entries = []
    for index in range(size):
        arch = sample_architecture(space, 1000 + index).to_dict()
        final = rng.uniform(0.85, 0.99)
        pruned = rng.random() < 0.85
        epochs = rng.choice([1, 4]) if pruned else EPOCHS
        curve = [final - 0.3 / (epoch + 1) for epoch in range(epochs)]
        entries.append(
            {
                "index": index,
                "status": "pruned" if pruned else "succeeded",
                "architecture": {k: arch[k] for k in ("levels", "activation", "learning_rate")},
                "value": None if pruned else max(curve),
                "curve": curve,
            }
        )
    return entries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--history", type=int, nargs="+", default=[100, 400, 800])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    space = normalize_search_space(SPACE)
    print("| history | check_history ms | plan_trial ms |")
    print("|---:|---:|---:|")
    for size in args.history:
        sent = history(size, space)
        checks, plans = [], []
        for seed in range(args.repeat + 1):
            started = time.perf_counter()
            checked = check_history(sent)
            checked_at = time.perf_counter()
            plan_trial(space, 10_000 + seed, SEARCH, checked, "maximize", "val_accuracy", EPOCHS)
            ended = time.perf_counter()
            if seed:  # the first trial warms up imports and caches
                checks.append((checked_at - started) * 1000)
                plans.append((ended - checked_at) * 1000)
        print(f"| {size} | {statistics.median(checks):.1f} | {statistics.median(plans):.1f} |")


if __name__ == "__main__":
    main()
