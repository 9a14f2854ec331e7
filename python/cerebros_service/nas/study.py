"""The run's history, as the host sends it with a trial, rebuilt into an Optuna study.

The host's store is the one record of a run: Optuna never keeps state between trials.
For each trial that needs it (a ``tpe``/``cmaes`` strategy or a pruner), the host puts the
run's other trials in ``parameters.history``, a list of entries::

    {"index": 3, "status": "succeeded",         # or failed, pruned, running
     "architecture": {"levels": [[12, 40]], "activation": "relu", "learning_rate": 0.003},
     "value": 0.97,                              # the objective at the best epoch
     "curve": [0.81, 0.93, 0.97]}                # the objective after each epoch

(``architecture`` only for a strategy that learns, ``curve`` only with a pruner, both absent
for a trial still ``running``). :func:`build_study` turns it into an in-memory study, in
index order: succeeded trials ``COMPLETE``, pruned ones ``PRUNED``, failed ones ``FAIL``,
running ones ``RUNNING``; the same history always gives the same study.

Optuna is imported only here (and by the modules that use a study), so a run with the
``random`` strategy and no pruner never needs it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .._dispatch import OpError
from .checks import as_int, contract_error

__all__ = ["HISTORY_STATUSES", "build_study", "check_history", "import_optuna", "params_of"]

#: The statuses a history entry may have, and the Optuna state of each.
HISTORY_STATUSES = ("succeeded", "failed", "pruned", "running")


def import_optuna() -> Any:
    """The ``optuna`` module, quiet; a ``dependency`` error with the install hint without it."""
    try:
        import optuna
    except ImportError as exc:
        raise OpError(
            "dependency",
            f"optuna cannot be imported ({exc}); the search strategies tpe and cmaes and the"
            " pruners need it: pip install 'cerebros_service[search]'",
            {"module": "optuna"},
        ) from exc
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def check_history(raw: Any, key: str = "parameters.history") -> list[dict]:
    """The history entries, checked and sorted by index (see the module docs)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise contract_error(key, f"must be a list, got {type(raw).__name__}")
    entries = []
    for i, entry in enumerate(raw):
        where = f"{key}[{i}]"
        if not isinstance(entry, Mapping):
            raise contract_error(where, f"must be an object, got {type(entry).__name__}")
        status = entry.get("status")
        if status not in HISTORY_STATUSES:
            raise contract_error(
                f"{where}.status", f"must be one of {', '.join(HISTORY_STATUSES)}, got {status!r}"
            )
        value = entry.get("value")
        curve = entry.get("curve") or []
        if not isinstance(curve, list):
            raise contract_error(f"{where}.curve", f"must be a list, got {curve!r}")
        architecture = entry.get("architecture")
        if architecture is not None and not isinstance(architecture, Mapping):
            raise contract_error(f"{where}.architecture", "must be an object")
        entries.append(
            {
                "index": as_int(entry.get("index"), f"{where}.index", minimum=0),
                "status": status,
                "architecture": architecture,
                "value": _number(value),
                "curve": [_number(v) for v in curve],
            }
        )
    entries.sort(key=lambda e: e["index"])
    return entries


def _number(value: Any) -> float | None:
    """A finite number, else ``None`` (a missing or non-finite value is not reported)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def params_of(architecture: Mapping[str, Any]) -> dict[str, Any]:
    """The Optuna parameters of a stored architecture (see ``strategies.OptunaChoices``)."""
    levels = architecture.get("levels") or []
    params: dict[str, Any] = {"levels": len(levels)}
    for k, level in enumerate(levels, start=1):
        params[f"units_{k}"] = len(level)
        for j, neurons in enumerate(level):
            params[f"neurons_{k}_{j}"] = int(neurons)
    if "activation" in architecture:
        params["activation"] = architecture["activation"]
    if "learning_rate" in architecture:
        params["learning_rate"] = float(architecture["learning_rate"])
    return params


def build_study(
    history: list[dict],
    direction: str,
    *,
    sampler: Any = None,
    pruner: Any = None,
    distributions: Mapping[str, Any] | None = None,
    rung_steps: list[int] | None = None,
) -> Any:
    """An in-memory study holding ``history`` (checked by :func:`check_history`).

    ``distributions`` (name -> Optuna distribution) gives each finished trial its
    parameters: those of its architecture that lie in their distribution. ``rung_steps``
    (the promotion steps of a successive-halving pruner) records, for each finished trial,
    its value at each rung its curve reached, as Optuna's pruner would have while it ran.
    """
    optuna = import_optuna()
    from optuna.pruners._successive_halving import _completed_rung_key
    from optuna.trial import TrialState

    # Trials are written through the storage's own API: ``Study.add_trial`` deep-copies
    # each one, which made rebuilding a study of a few hundred trials cost more than the
    # sampling itself.
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(
        storage=storage, direction=direction, sampler=sampler, pruner=pruner
    )
    study_id = storage.get_study_id_from_name(study.study_name)
    for entry in history:
        trial_id = storage.create_new_trial(study_id)  # running
        if entry["status"] == "running":
            continue
        if distributions is not None and entry["architecture"] is not None:
            for name, value in params_of(entry["architecture"]).items():
                dist = distributions.get(name)
                if dist is not None and _contains(dist, value):
                    storage.set_trial_param(trial_id, name, dist.to_internal_repr(value), dist)
        curve = {
            step: value for step, value in enumerate(entry["curve"], start=1) if value is not None
        }
        for step, value in curve.items():
            storage.set_trial_intermediate_value(trial_id, step, value)
        for rung, step in enumerate(rung_steps or []):
            if step in curve:
                storage.set_trial_system_attr(trial_id, _completed_rung_key(rung), curve[step])
        if entry["status"] == "succeeded" and entry["value"] is not None:
            storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [entry["value"]])
        elif entry["status"] == "pruned":
            storage.set_trial_state_values(trial_id, TrialState.PRUNED)
        else:
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
    return study


def _contains(distribution: Any, value: Any) -> bool:
    """Whether ``value`` is one of a categorical's choices or within a numeric range."""
    if hasattr(distribution, "choices"):
        return value in distribution.choices
    return isinstance(value, int | float) and distribution.low <= value <= distribution.high
