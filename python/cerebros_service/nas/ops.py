"""Bodies of the NAS ops of :mod:`cerebros_service` (``start_run``, ``run_trial``, ...).

Each function takes the op's payload dict (a v1 contract of DESIGN §3) and returns the op's
result dict. Invalid input raises ``OpError("contract", ...)`` naming the key; a filesystem
failure while writing artifacts raises ``OpError("system_error", ...)`` naming the path.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from ..vocabulary import DIRECTIONS, RUN_STATUSES, TRIAL_STATUSES
from .artifacts import artifact_path, artifact_root, ensure_dir, safe_name
from .checks import (
    as_int,
    as_seed,
    check_contract_tag,
    contract_error,
    opt_mapping,
    opt_str,
    req_str,
)
from .datasets import Dataset, load_dataset, normalize_dataset_options
from .planning import plan_trial
from .rules import OBJECTIVES, check_section
from .search_space import normalize_search_space
from .strategies import require
from .study import check_history, import_optuna
from .trainer import TrainResult
from .trainers import ARTIFACT_SUFFIX, check_trainer, fit, too_large

__all__ = ["start_run", "run_trial", "record_trial", "finalize_run"]

_OBJECTIVE_ALIASES = {"accuracy": "val_accuracy", "loss": "val_loss", "rmse": "val_rmse"}

# -- shared checks --------------------------------------------------------------------------


def _objective(value: Any, task: str, key: str) -> str:
    """The canonical objective for ``task`` (default: val_accuracy or val_rmse)."""
    if value is None:
        return "val_accuracy" if task == "classification" else "val_rmse"
    if not isinstance(value, str):
        raise contract_error(key, f"must be one of {', '.join(OBJECTIVES)}, got {value!r}")
    name = _OBJECTIVE_ALIASES.get(value, value)
    if name not in OBJECTIVES:
        raise contract_error(key, f"must be one of {', '.join(OBJECTIVES)}, got {value!r}")
    needs = OBJECTIVES[name][0]
    if needs is not None and needs != task:
        raise contract_error(
            key, f"objective {name} needs a {needs} dataset, but the dataset is {task}"
        )
    return name


def _direction(value: Any, objective: str, key: str) -> str:
    if value is None:
        return OBJECTIVES[objective][1]
    if value not in DIRECTIONS:
        raise contract_error(key, f"must be maximize or minimize, got {value!r}")
    return value


def _budget(raw: Mapping[str, Any]) -> dict[str, int]:
    """Validate the budget (rules of ``spec_rules.json``) and fill its defaults."""
    return check_section("budget", raw, "budget")


def _search(params: Mapping[str, Any]) -> dict[str, str]:
    """``parameters.search`` (strategy and pruner) checked, defaults filled."""
    return check_section("search", opt_mapping(params, "search", "parameters.search"), "search")


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _load(dataset_id: Any, options: Any, seed: int) -> Dataset:
    if dataset_id is None:
        raise contract_error("dataset_id", "is required")
    return load_dataset(dataset_id, normalize_dataset_options(options), seed)


# -- ops ------------------------------------------------------------------------------------


def start_run(payload: Mapping[str, Any]) -> dict:
    """Check a ``RunStartedV1``: dataset, search space, objective and budget; prepare the run.

    Returns ``{"run_id", "status": "running", "task", "dataset", "search_space", "objective",
    "direction", "budget", "search", "seed", "trainer", "artifact_dir"}``. A ``keras``
    trainer without keras importable, or a ``tpe``/``cmaes`` strategy or a pruner whose
    library is missing, is a ``dependency`` error (with the install hint) before any trial.
    """
    check_contract_tag(payload, "run_started")
    run_id = req_str(payload, "run_id")
    if payload.get("timestamp") is None:
        raise contract_error("timestamp", "is required")
    params = opt_mapping(payload, "parameters")
    seed = as_seed(params.get("seed", 0), "parameters.seed")
    trainer = check_trainer(params.get("trainer"), "parameters.trainer")
    options = normalize_dataset_options(
        opt_mapping(params, "dataset_options", "parameters.dataset_options")
    )
    space = normalize_search_space(payload.get("search_space"))
    budget = _budget(opt_mapping(payload, "budget"))
    search = _search(params)
    require(search["strategy"])
    if search["pruner"] != "none":
        import_optuna()
    data = _load(payload.get("dataset_id"), options, seed)
    objective = _objective(payload.get("objective"), data.task, "objective")
    direction = _direction(params.get("direction"), objective, "parameters.direction")
    artifact_dir = opt_str(params, "artifact_dir", "parameters.artifact_dir")
    run_dir = artifact_root(artifact_dir) / safe_name(run_id)
    ensure_dir(run_dir)
    return {
        "run_id": run_id,
        "status": "running",
        "task": data.task,
        "dataset": data.summary(),
        "search_space": space,
        "objective": objective,
        "direction": direction,
        "budget": budget,
        "search": search,
        "seed": seed,
        "trainer": trainer,
        "artifact_dir": str(run_dir.parent),
    }


def run_trial(payload: Mapping[str, Any]) -> dict:
    """Sample one architecture from ``seed``, train it and report a ``TrialReportedV1``."""
    started = time.perf_counter()
    check_contract_tag(payload, "trial_requested")
    run_id = req_str(payload, "run_id")
    trial_id = req_str(payload, "trial_id")
    if payload.get("index") is None:
        raise contract_error("index", "is required")
    index = as_int(payload["index"], "index", minimum=0)
    seed = as_seed(payload.get("seed"), "seed")
    params = opt_mapping(payload, "parameters")
    space = normalize_search_space(payload.get("search_space"))
    budget = _budget(opt_mapping(payload, "budget"))
    run_seed = as_seed(params.get("run_seed", 0), "parameters.run_seed")
    trainer = check_trainer(params.get("trainer"), "parameters.trainer")
    options = opt_mapping(params, "dataset_options", "parameters.dataset_options")
    data = _load(payload.get("dataset_id"), options, run_seed)
    objective = _objective(params.get("objective"), data.task, "parameters.objective")
    direction = _direction(params.get("direction"), objective, "parameters.direction")
    search = _search(params)
    history = check_history(params.get("history"))
    path = artifact_path(
        opt_str(params, "artifact_dir", "parameters.artifact_dir"),
        run_id,
        trial_id,
        ARTIFACT_SUFFIX[trainer],
    )
    ensure_dir(path.parent)  # fail before training, not after

    arch, on_epoch = plan_trial(
        space, seed, search, history, direction, objective, budget["epochs"]
    )
    refusal = too_large(arch, data, budget)
    if refusal is None:
        fitted = fit(trainer, arch, data, budget=budget, seed=seed, on_epoch=on_epoch)
        result = fitted.result
    else:  # fails as this one trial, before a byte of it is allocated
        fitted, result = None, TrainResult(epochs_run=0, best_epoch=0)
    metric = "val_accuracy" if data.task == "classification" else "val_rmse"
    curve = {
        "val_loss": [_finite(v) for v in result.val_loss],
        metric: [_finite(v) for v in result.val_metric],
        "train_loss": [_finite(v) for v in result.train_loss],
    }
    metrics: dict[str, Any] = {}
    warnings: list[str] = []
    if result.ok:
        metrics[metric] = result.best(result.val_metric)
        metrics["val_loss"] = result.best(result.val_loss)
        metrics["train_loss"] = result.best(result.train_loss)
    if fitted is not None:
        metrics["params"] = fitted.n_params
    metrics["epochs_run"] = result.epochs_run
    metrics["best_epoch"] = result.best_epoch
    metrics["curve"] = curve
    if refusal is not None:
        warnings.append(refusal)
    if result.diverged:
        warnings.append(
            f"training diverged (non-finite loss) at epoch {result.epochs_run}"
            + (f"; kept the weights of epoch {result.best_epoch}" if result.ok else "")
        )
    summary = arch.summary()
    summary.update(
        batch_size=budget["batch_size"],
        epochs=budget["epochs"],
        patience=budget["patience"],
        seed=seed,
        index=index,
        trainer=trainer,
    )
    artifact_uri = None
    if fitted is not None and result.ok and not result.pruned:
        meta = {
            "format": "cerebros-nas-artifact",
            "format_version": 1,
            "run_id": run_id,
            "trial_id": trial_id,
            "candidate_id": arch.candidate_id,
            "seed": seed,
            "task": data.task,
            "objective": objective,
            "architecture": arch.to_dict(),
            "dataset": data.summary(),
            "classes": data.classes,
            "y_mean": data.y_mean,
            "y_std": data.y_std,
            "metrics": {k: v for k, v in metrics.items() if k != "curve"},
            "budget": budget,
        }
        sha256, size = fitted.save(path, meta)
        artifact_uri = path.as_uri()
        summary["artifact"] = {"sha256": sha256, "bytes": size}
    return {
        "contract": "trial_reported",
        "version": 1,
        "run_id": run_id,
        "trial_id": trial_id,
        "status": _status(result.ok, result.pruned),
        "metrics": metrics,
        "parameters": summary,
        "artifact_uri": artifact_uri,
        "duration_ms": int(round((time.perf_counter() - started) * 1000)),
        "candidate_id": arch.candidate_id,
        "warnings": warnings,
    }


def _status(ok: bool, pruned: bool) -> str:
    """A trial's status: a pruned trial has no artifact and never counts as the best."""
    if not ok:
        return "failed"
    return "pruned" if pruned else "succeeded"


def _check_optional(payload: Mapping[str, Any], key: str, kind: type | tuple, what: str) -> None:
    value = payload.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
        raise contract_error(key, f"must be {what}, got {value!r}")


def _check_duration(payload: Mapping[str, Any]) -> None:
    _check_optional(payload, "duration_ms", (int, float), "a number")
    value = payload.get("duration_ms")
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise contract_error("duration_ms", f"must be a non-negative number, got {value!r}")


def record_trial(payload: Mapping[str, Any]) -> dict:
    """Validate a ``TrialReportedV1`` and acknowledge it."""
    check_contract_tag(payload, "trial_reported")
    run_id = req_str(payload, "run_id")
    trial_id = req_str(payload, "trial_id")
    status = payload.get("status")
    if status is None:
        raise contract_error("status", "is required")
    if status not in TRIAL_STATUSES:
        raise contract_error(
            "status", f"must be one of {', '.join(TRIAL_STATUSES)}, got {status!r}"
        )
    _check_optional(payload, "metrics", dict, "a table/object")
    _check_optional(payload, "parameters", dict, "a table/object")
    _check_optional(payload, "warnings", list, "a list")
    _check_optional(payload, "artifact_uri", str, "a string")
    _check_optional(payload, "candidate_id", str, "a string")
    _check_optional(payload, "rank", int, "an integer")
    _check_duration(payload)
    return {"run_id": run_id, "trial_id": trial_id, "status": status, "recorded": True}


def finalize_run(payload: Mapping[str, Any]) -> dict:
    """Validate a ``RunFinalizedV1`` and acknowledge it."""
    check_contract_tag(payload, "run_finalized")
    run_id = req_str(payload, "run_id")
    status = payload.get("status")
    if status is None:
        raise contract_error("status", "is required")
    if status not in RUN_STATUSES:
        raise contract_error("status", f"must be one of {', '.join(RUN_STATUSES)}, got {status!r}")
    best_trial_id = opt_str(payload, "best_trial_id")
    _check_optional(payload, "metrics", dict, "a table/object")
    _check_optional(payload, "artifact_refs", list, "a list")
    _check_optional(payload, "warnings", list, "a list")
    _check_optional(payload, "returncode", int, "an integer")
    _check_duration(payload)
    return {
        "run_id": run_id,
        "status": status,
        "finalized": True,
        "best_trial_id": best_trial_id,
    }
