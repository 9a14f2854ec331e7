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

import functools
import math
from collections.abc import Mapping
from datetime import datetime
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

    storage = _history_storage_class()()
    study = optuna.create_study(
        storage=storage, direction=direction, sampler=sampler, pruner=pruner
    )
    study_id = storage.get_study_id_from_name(study.study_name)
    for entry in history:
        if entry["status"] == "running":
            storage.create_new_trial(study_id)
            continue
        params: dict[str, Any] = {}
        trial_distributions: dict[str, Any] = {}
        if distributions is not None and entry["architecture"] is not None:
            for name, value in params_of(entry["architecture"]).items():
                dist = distributions.get(name)
                if dist is not None and _contains(dist, value):
                    params[name] = value
                    trial_distributions[name] = dist
        curve = {
            step: value for step, value in enumerate(entry["curve"], start=1) if value is not None
        }
        rungs = {
            _completed_rung_key(rung): curve[step]
            for rung, step in enumerate(rung_steps or [])
            if step in curve
        }
        storage.add_finished_trial(
            study_id,
            _finished_state(entry),
            entry["value"] if entry["status"] == "succeeded" else None,
            params=params,
            distributions=trial_distributions,
            intermediate_values=curve,
            system_attrs=rungs,
        )
    return study


def _finished_state(entry: Mapping[str, Any]) -> Any:
    """The Optuna state of a finished history entry (a success without a value failed)."""
    from optuna.trial import TrialState

    if entry["status"] == "succeeded" and entry["value"] is not None:
        return TrialState.COMPLETE
    if entry["status"] == "pruned":
        return TrialState.PRUNED
    return TrialState.FAIL


@functools.cache
def _history_storage_class() -> type:
    """The storage :func:`build_study` fills, its class built once Optuna is imported."""
    optuna = import_optuna()
    from optuna.trial import FrozenTrial

    class HistoryStorage(optuna.storages.InMemoryStorage):  # type: ignore[misc, name-defined]
        """Optuna's in-memory storage, plus one way in for a trial that already ended.

        Going through the public setters copies the whole trial once per parameter,
        intermediate value and attribute (quadratic in a trial's size, and the largest cost
        of a suggestion at a few hundred trials); a finished trial of the history never
        changes, so it is built once and stored as built. This reaches into the storage's
        private ``_set_trial``/``_update_cache`` (Optuna is pinned; the study tests cover it).
        """

        def add_finished_trial(
            self,
            study_id: int,
            state: Any,
            value: float | None,
            *,
            params: dict[str, Any],
            distributions: dict[str, Any],
            intermediate_values: dict[int, float],
            system_attrs: dict[str, Any],
        ) -> None:
            trial_id = self.create_new_trial(study_id)
            now = datetime.now()
            trial = FrozenTrial(
                number=self.get_trial_number_from_id(trial_id),
                state=state,
                value=value,
                datetime_start=now,
                datetime_complete=now,
                params=params,
                distributions=distributions,
                user_attrs={},
                system_attrs=system_attrs,
                intermediate_values=intermediate_values,
                trial_id=trial_id,
            )
            with self._lock:
                self._set_trial(trial_id, trial)
                self._update_cache(trial_id, study_id)

    return HistoryStorage


def _contains(distribution: Any, value: Any) -> bool:
    """Whether ``value`` is one of a categorical's choices or within a numeric range."""
    if hasattr(distribution, "choices"):
        return value in distribution.choices
    return isinstance(value, int | float) and distribution.low <= value <= distribution.high
