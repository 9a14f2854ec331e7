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
import inspect
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any, NamedTuple

from .._dispatch import OpError
from .checks import as_int, contract_error

__all__ = [
    "HISTORY_STATUSES",
    "TPE_SPLITS",
    "build_study",
    "check_history",
    "import_optuna",
    "neurons_name",
    "param_names",
    "params_of",
    "units_name",
]

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
        params[units_name(k)] = len(level)
        for j, neurons in enumerate(level):
            params[neurons_name(k, j)] = int(neurons)
    if "activation" in architecture:
        params["activation"] = architecture["activation"]
    if "learning_rate" in architecture:
        params["learning_rate"] = float(architecture["learning_rate"])
    return params


def param_names(history: list[dict]) -> set[str]:
    """The names of :func:`params_of` over the architectures of ``history``, from their
    layouts (a run has a few dozen layouts and hundreds of trials)."""
    layouts = {
        (
            tuple(len(level) for level in entry["architecture"].get("levels") or []),
            "activation" in entry["architecture"],
            "learning_rate" in entry["architecture"],
        )
        for entry in history
        if entry["architecture"] is not None
    }
    names: set[str] = set()
    for units, activation, learning_rate in layouts:
        names.add("levels")
        for k, count in enumerate(units, start=1):
            names.add(units_name(k))
            names.update(neurons_name(k, j) for j in range(count))
        if activation:
            names.add("activation")
        if learning_rate:
            names.add("learning_rate")
    return names


def units_name(level: int) -> str:
    """The parameter of the number of units of ``level`` (from 1)."""
    return f"units_{level}"


def neurons_name(level: int, unit: int) -> str:
    """The parameter of the neurons of ``unit`` (from 0) of ``level`` (from 1)."""
    return f"neurons_{level}_{unit}"


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

    A finished trial's record is made once per process (:class:`_FinishedTrials`): a run's
    next trial sends the same history plus a few entries, and remaking the record of every
    entry was most of the rebuild.
    """
    optuna = import_optuna()
    storage = _history_storage_class()()
    study = optuna.create_study(
        storage=storage, direction=direction, sampler=sampler, pruner=pruner
    )
    _share_tpe_splits()
    setattr(study, TPE_SPLITS, {})
    study_id = storage.get_study_id_from_name(study.study_name)
    records = _FINISHED.records_for(distributions, rung_steps)
    now = datetime.now()
    for entry in history:
        if entry["status"] == "running":
            storage.create_new_trial(study_id)
        else:
            storage.add_finished_trial(study_id, records.record(entry), now)
    return study


#: The attribute of a study built by :func:`build_study` that holds its TPE splits.
TPE_SPLITS = "_cerebros_tpe_splits"


@functools.cache
def _share_tpe_splits() -> None:
    """Lets TPE split a built study's trials into its good and bad ones once per trial.

    Optuna's TPE sorts all finished trials into "below" and "above" (``_split_trials``)
    for every parameter it samples: up to 14 times per trial here, on the same trials,
    for the same result, and at a few hundred trials the largest part of a suggestion.
    The split is kept in the study's :data:`TPE_SPLITS` table, keyed by what it depends
    on; studies without that table (none but ours have it) split as Optuna does. With
    another Optuna whose function differs, nothing is changed.
    """
    from optuna.samplers._tpe import sampler as tpe

    split = getattr(tpe, "_split_trials", None)
    if split is None or list(inspect.signature(split).parameters) != [
        "study",
        "trials",
        "n_below",
    ]:
        return

    def shared_split(study: Any, trials: list, n_below: int) -> tuple[list, list]:
        splits = getattr(study, TPE_SPLITS, None)
        if splits is None:
            return split(study, trials, n_below)
        key = (n_below, tuple((trial.number, trial.state) for trial in trials))
        made = splits.get(key)
        if made is None:
            made = splits[key] = split(study, trials, n_below)
        return list(made[0]), list(made[1])

    tpe._split_trials = shared_split


class _FinishedRecord(NamedTuple):
    """What a finished history entry becomes in a study, whatever its position."""

    state: Any
    value: float | None
    params: dict[str, Any]
    distributions: dict[str, Any]
    intermediate_values: dict[int, float]
    system_attrs: dict[str, Any]


class _Records:
    """The records of finished entries for one set of ``distributions`` and
    ``rung_steps``, each made once and shared by the studies built after (records are
    never changed: Optuna's storage replaces a trial rather than editing it)."""

    #: Records kept at most (a history holds at most 275 finished trials, the host's
    #: ``RECENT_LIMIT`` and ``BEST_LIMIT``); past it the table starts afresh.
    LIMIT = 2_500

    def __init__(self, distributions: Mapping[str, Any] | None, rung_steps: list[int]) -> None:
        from optuna.pruners._successive_halving import _completed_rung_key

        self._distributions = distributions
        self._rungs = [(_completed_rung_key(rung), step) for rung, step in enumerate(rung_steps)]
        self._made: dict[tuple, _FinishedRecord] = {}

    def record(self, entry: Mapping[str, Any]) -> _FinishedRecord:
        """The record of the finished ``entry``."""
        key = _entry_key(entry)
        if key is None:
            return self._make(entry)
        made = self._made.get(key)
        if made is None:
            if len(self._made) >= self.LIMIT:
                self._made.clear()
            made = self._made[key] = self._make(entry)
        return made

    def _make(self, entry: Mapping[str, Any]) -> _FinishedRecord:
        params: dict[str, Any] = {}
        trial_distributions: dict[str, Any] = {}
        if self._distributions is not None and entry["architecture"] is not None:
            for name, value in params_of(entry["architecture"]).items():
                dist = self._distributions.get(name)
                if dist is not None and _contains(dist, value):
                    params[name] = value
                    trial_distributions[name] = dist
        curve = {
            step: value for step, value in enumerate(entry["curve"], start=1) if value is not None
        }
        rungs = {key: curve[step] for key, step in self._rungs if step in curve}
        return _FinishedRecord(
            _finished_state(entry),
            entry["value"] if entry["status"] == "succeeded" else None,
            params,
            trial_distributions,
            curve,
            rungs,
        )


class _FinishedTrials:
    """The per-process tables of :class:`_Records`, one per set of distributions and
    rung steps (a run's set grows with the parameter names its history has seen; a few
    sets are kept for runs that share the process)."""

    #: Tables kept at most, the least recently used dropped first.
    TABLES = 4

    def __init__(self) -> None:
        self._tables: dict[tuple, _Records] = {}

    def records_for(
        self, distributions: Mapping[str, Any] | None, rung_steps: list[int] | None
    ) -> _Records:
        steps = list(rung_steps or [])
        key = (
            None if distributions is None else tuple(sorted(distributions.items())),
            tuple(steps),
        )
        table = self._tables.pop(key, None)
        if table is None:
            table = _Records(distributions, steps)
            if len(self._tables) >= self.TABLES:
                del self._tables[next(iter(self._tables))]
        self._tables[key] = table
        return table


_FINISHED = _FinishedTrials()


def _entry_key(entry: Mapping[str, Any]) -> tuple | None:
    """Everything a finished entry's record depends on, hashable; ``None`` for an entry
    whose architecture does not have the stored shape (its record is made each time)."""
    architecture = entry["architecture"]
    shape = None
    if architecture is not None:
        try:
            shape = (
                tuple(architecture),
                tuple(map(tuple, architecture.get("levels") or [])),
                architecture.get("activation"),
                architecture.get("learning_rate"),
            )
            hash(shape)
        except TypeError:
            return None
    return (entry["status"], entry["value"], tuple(entry["curve"]), shape)


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
        private fields as ``create_new_trial`` uses them (Optuna is pinned; the study tests
        compare with a study filled through the public API).
        """

        def add_finished_trial(self, study_id: int, record: Any, now: datetime) -> None:
            """Appends a trial that ended as ``record`` (a :class:`_FinishedRecord`), as
            ``create_new_trial`` appends one, without its copy of a template."""
            with self._lock:
                self._check_study_id(study_id)
                self._max_trial_id += 1
                trial_id = self._max_trial_id
                trials = self._studies[study_id].trials
                number = len(trials)
                trials.append(
                    FrozenTrial(
                        number=number,
                        state=record.state,
                        value=record.value,
                        datetime_start=now,
                        datetime_complete=now,
                        params=record.params,
                        distributions=record.distributions,
                        user_attrs={},
                        system_attrs=record.system_attrs,
                        intermediate_values=record.intermediate_values,
                        trial_id=trial_id,
                    )
                )
                self._trial_id_to_study_id_and_number[trial_id] = (study_id, number)
                self._update_cache(trial_id, study_id)

    return HistoryStorage


def _contains(distribution: Any, value: Any) -> bool:
    """Whether ``value`` is one of a categorical's choices or within a numeric range."""
    if hasattr(distribution, "choices"):
        return value in distribution.choices
    return isinstance(value, int | float) and distribution.low <= value <= distribution.high
