"""Search strategies and pruners (DESIGN §13): ``random`` unchanged, Optuna's samplers rebuilt
from the run's history deterministically, Optuna's pruning rules fed from the curves of the
run's finished trials, and the ``pruned`` status of a trial."""

from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path

import optuna
import pytest

from cerebros_service._dispatch import OpError
from cerebros_service.nas import ops
from cerebros_service.nas.datasets import load_dataset
from cerebros_service.nas.network import Network
from cerebros_service.nas.pruning import epoch_hook
from cerebros_service.nas.search_space import normalize_search_space, sample_architecture
from cerebros_service.nas.strategies import suggest_architecture
from cerebros_service.nas.study import check_history
from cerebros_service.nas.trainer import train

SPACES = [
    {},
    {
        "maximum_levels": 6,
        "maximum_units_per_level": 5,
        "activation": ["relu", "elu", "tanh"],
        "learning_rate": [1e-4, 0.1],
    },
    {"learning_rate": [0.01, 0.01]},
]

#: The digest of 900 architectures sampled by the ``random`` strategy before strategies
#: existed (commit bf0ae07): any change to its draws changes it.
RANDOM_DIGEST = "4eb66506505e1ad97cca231bfeb3a5905803f8e285b18df9932875fc46b2bfc9"


def test_random_sampling_is_unchanged_bit_for_bit():
    lines = []
    for raw in SPACES:
        space = normalize_search_space(raw)
        for seed in range(300):
            arch = sample_architecture(space, seed * 7919 + seed**3)
            lines.append(json.dumps(arch.to_dict()) + "\n")
    assert hashlib.sha256("".join(lines).encode()).hexdigest() == RANDOM_DIGEST
    space = normalize_search_space(SPACES[1])
    # The random strategy ignores the history.
    assert suggest_architecture(space, 11, "random", HISTORY, "maximize") == sample_architecture(
        space, 11
    )


def finished(index: int, seed: int, value: float, status: str = "succeeded") -> dict:
    """A history entry of a trial whose architecture is that ``random`` samples from ``seed``."""
    arch = sample_architecture(normalize_search_space(SPACES[1]), seed).to_dict()
    curve = [value - 0.1, value - 0.05, value]
    return {
        "index": index,
        "status": status,
        "architecture": {k: arch[k] for k in ("levels", "activation", "learning_rate")},
        "value": value if status == "succeeded" else None,
        "curve": curve,
    }


HISTORY_SENT = (
    [finished(i, 100 + i, 0.5 + 0.03 * i) for i in range(12)]
    + [finished(12, 200, 0.2, "pruned"), finished(13, 201, 0.1, "failed")]
    + [{"index": 14, "status": "running"}]
)
HISTORY = check_history(HISTORY_SENT)


@pytest.mark.parametrize("strategy", ["tpe", "cmaes"])
def test_a_suggestion_depends_only_on_the_seed_and_the_history(strategy):
    space = normalize_search_space(SPACES[1])
    first = suggest_architecture(space, 99, strategy, HISTORY, "maximize")
    again = suggest_architecture(space, 99, strategy, check_history(HISTORY_SENT[::-1]), "maximize")
    assert first == again
    other_seed = suggest_architecture(space, 98, strategy, HISTORY, "maximize")
    assert other_seed != first
    shorter = suggest_architecture(space, 99, strategy, HISTORY[:11], "maximize")
    assert shorter != first
    assert space["minimum_levels"] <= len(first.levels) <= space["maximum_levels"]
    assert 1e-4 <= first.learning_rate <= 0.1


def test_a_rebuilt_study_equals_one_told_through_optunas_public_api():
    """``build_study`` stores finished trials as built (no per-field copies); the study it
    gives holds the same trials as one filled through ``Study.add_trial``, and TPE suggests
    the same from both."""
    from cerebros_service.nas.strategies import _distributions
    from cerebros_service.nas.study import build_study, params_of

    space = normalize_search_space(SPACES[1])
    names = {n for e in HISTORY if e["architecture"] for n in params_of(e["architecture"])}
    distributions = _distributions(optuna, space, names)
    rungs = [1, 2]
    fast = build_study(
        HISTORY,
        "maximize",
        sampler=optuna.samplers.TPESampler(seed=5),
        distributions=distributions,
        rung_steps=rungs,
    )
    slow = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=5))
    states = {
        "succeeded": optuna.trial.TrialState.COMPLETE,
        "pruned": optuna.trial.TrialState.PRUNED,
        "failed": optuna.trial.TrialState.FAIL,
    }
    for entry in HISTORY:
        if entry["status"] == "running":
            slow.ask()
            continue
        params = params_of(entry["architecture"])
        curve = dict(enumerate(entry["curve"], start=1))
        slow.add_trial(
            optuna.trial.create_trial(
                state=states[entry["status"]],
                value=entry["value"] if entry["status"] == "succeeded" else None,
                params=params,
                distributions={name: distributions[name] for name in params},
                intermediate_values=curve,
                system_attrs={f"completed_rung_{r}": curve[step] for r, step in enumerate(rungs)},
            )
        )

    def summary(study):
        return [
            (t.number, t.state, t.value, t.params, t.distributions, t.intermediate_values)
            + (t.system_attrs,)
            for t in study.get_trials(deepcopy=False)
        ]

    assert summary(fast) == summary(slow)
    assert fast.best_value == slow.best_value
    assert fast.ask().suggest_int("levels", 1, 6) == slow.ask().suggest_int("levels", 1, 6)


def long_history(n: int = 40) -> list[dict]:
    """``n`` finished trials (a few pruned), enough for TPE to leave its startup trials."""
    sent = [finished(i, 300 + i, 0.4 + 0.5 * ((i * 37) % 11) / 11) for i in range(n)]
    sent += [finished(n + i, 400 + i, 0.1, "pruned") for i in range(4)]
    return check_history(sent)


def test_tpe_splitting_once_per_trial_suggests_what_optuna_does():
    """A built study keeps TPE's split of its trials (one for all the parameters of a
    trial); without the kept splits, Optuna's own path gives the same architecture."""
    from cerebros_service.nas.strategies import architecture_of, sampling
    from cerebros_service.nas.study import TPE_SPLITS, build_study

    space = normalize_search_space(SPACES[1])
    history = long_history()
    for seed in (1, 2, 3):
        shared = build_study(history, "maximize", **sampling(space, seed, "tpe", history))
        own = build_study(history, "maximize", **sampling(space, seed, "tpe", history))
        delattr(own, TPE_SPLITS)
        assert architecture_of(space, seed, shared.ask()) == architecture_of(space, seed, own.ask())
        # Two shapes of split (the parameters all trials have, and each further one, see
        # TPE's n_below) instead of one per suggested parameter.
        assert 1 <= len(getattr(shared, TPE_SPLITS)) <= 2


def test_a_finished_trials_record_is_made_once_and_remade_when_the_entry_changes():
    from cerebros_service.nas.strategies import sampling
    from cerebros_service.nas.study import build_study

    space = normalize_search_space(SPACES[1])
    history = long_history()

    def trials(entries):
        study = build_study(entries, "maximize", **sampling(space, 1, "tpe", entries))
        return study.get_trials(deepcopy=False)

    first, again = trials(history), trials(history)
    assert all(a.params is b.params for a, b in zip(first, again, strict=True))
    changed = [dict(entry) for entry in history]
    changed[3]["value"] = 0.123
    changed[4]["architecture"] = {**changed[4]["architecture"], "learning_rate": 0.05}
    remade = trials(changed)
    assert remade[3].value == 0.123 and first[3].value != 0.123
    assert remade[4].params["learning_rate"] == 0.05
    assert remade[5].params is first[5].params


def test_param_names_are_the_names_params_of_gives():
    from cerebros_service.nas.study import param_names, params_of

    history = long_history(60) + [{"index": 99, "status": "running", "architecture": None}]
    expected = {
        name
        for entry in history
        if entry["architecture"]
        for name in params_of(entry["architecture"])
    }
    assert param_names(history) == expected
    assert param_names([]) == set()


def test_tpe_learns_from_the_history():
    """After its startup trials TPE proposes near the best trials, not uniformly: with the
    history favouring one activation, most suggestions use it."""
    space = normalize_search_space({"activation": ["relu", "elu", "tanh", "sigmoid", "gelu"]})
    history = []
    for i in range(30):
        arch = sample_architecture(space, 500 + i).to_dict()
        good = arch["activation"] == "tanh"
        history.append(
            {
                "index": i,
                "status": "succeeded",
                "architecture": arch,
                "value": 0.9 if good else 0.1,
                "curve": [],
            }
        )
    history = check_history(history)
    picks = [
        suggest_architecture(space, seed, "tpe", history, "maximize").activation
        for seed in range(20)
    ]
    assert picks.count("tanh") >= 12, picks


def test_bad_history_is_refused_naming_the_key():
    with pytest.raises(OpError) as info:
        check_history([{"index": 0, "status": "done"}])
    assert info.value.error_class == "contract"
    assert info.value.details["key"] == "parameters.history[0].status"


def test_the_median_pruner_rule():
    """Optuna's MedianPruner: no decision before 5 completed trials, then a trial worse than
    the median of the completed trials at the same epoch is pruned."""
    history = check_history(
        [
            {"index": i, "status": "succeeded", "value": 0.9, "curve": [0.5, 0.7, 0.9]}
            for i in range(5)
        ]
    )
    hook = epoch_hook("median", history[:4], "maximize", "val_accuracy", epochs=3)
    assert hook is not None and not hook(1, {"val_accuracy": 0.1})
    hook = epoch_hook("median", history, "maximize", "val_accuracy", epochs=3)
    assert not hook(1, {"val_accuracy": 0.6})
    assert hook(2, {"val_accuracy": 0.6})
    # Never at the last epoch.
    hook = epoch_hook("median", history, "maximize", "val_accuracy", epochs=3)
    assert not hook(3, {"val_accuracy": 0.0})
    # Minimising: a larger loss is worse.
    losses = check_history(
        [{"index": i, "status": "succeeded", "value": 0.2, "curve": [0.5, 0.2]} for i in range(5)]
    )
    hook = epoch_hook("median", losses, "minimize", "val_loss", epochs=3)
    assert hook(1, {"val_loss": 0.6})
    assert epoch_hook("none", history, "maximize", "val_accuracy", epochs=3) is None


def test_asha_rebuilt_from_the_history_decides_as_a_live_optuna_study():
    """The rung values recorded for the history's trials are those Optuna's
    SuccessiveHalvingPruner records while the trials run: replaying the same curves through
    a live study gives the same decisions as hooks built from the history."""
    curves = [
        [0.5, 0.6, 0.7, 0.8, 0.85],
        [0.4, 0.5, 0.6, 0.7, 0.8],
        [0.6, 0.65, 0.7, 0.75, 0.9],
        [0.3, 0.5, 0.55, 0.6, 0.65],
        [0.55, 0.6, 0.62, 0.64, 0.66],
        [0.58, 0.7, 0.72, 0.74, 0.76],
        [0.62, 0.66, 0.69, 0.7, 0.71],
        [0.2, 0.9, 0.95, 0.97, 0.98],
        [0.7, 0.8, 0.9, 0.95, 0.99],
    ]
    live = optuna.create_study(
        direction="maximize",
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=4),
    )
    history: list[dict] = []
    for index, curve in enumerate(curves):
        trial = live.ask()
        hook = epoch_hook("asha", check_history(history), "maximize", "val_accuracy", epochs=5)
        ran = []
        pruned = False
        for epoch, value in enumerate(curve, start=1):
            ran.append(value)
            trial.report(value, epoch)
            expected = trial.should_prune() if epoch < 5 else False
            assert hook(epoch, {"val_accuracy": value}) == expected, (index, epoch)
            if expected:
                pruned = True
                break
        if pruned:
            live.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            live.tell(trial, max(ran))
        history.append(
            {
                "index": index,
                "status": "pruned" if pruned else "succeeded",
                "value": None if pruned else max(ran),
                "curve": ran,
            }
        )
    assert any(entry["status"] == "pruned" for entry in history)
    assert any(entry["status"] == "succeeded" for entry in history[1:])


def test_the_trainer_stops_when_the_hook_says_so():
    data = load_dataset("sklearn:iris", {"validation_split": 0.2}, 3)
    arch = sample_architecture(normalize_search_space({}), 5)
    seen = []

    def on_epoch(epoch: int, values: dict[str, float]) -> bool:
        seen.append((epoch, sorted(values)))
        return epoch == 2

    net = Network(arch, data.n_features, data.n_outputs, data.task)
    result = train(
        net,
        data,
        epochs=6,
        batch_size=16,
        patience=None,
        learning_rate=0.01,
        seed=1,
        on_epoch=on_epoch,
    )
    assert result.pruned and result.epochs_run == 2 and result.ok
    assert seen == [(1, ["train_loss", "val_accuracy", "val_loss"])] * 1 + [
        (2, ["train_loss", "val_accuracy", "val_loss"])
    ]
    net = Network(arch, data.n_features, data.n_outputs, data.task)
    plain = train(net, data, epochs=6, batch_size=16, patience=None, learning_rate=0.01, seed=1)
    assert not plain.pruned and plain.epochs_run == 6
    assert plain.val_loss[:2] == result.val_loss


def trial_payload(tmp_path: Path, search: dict, history: list) -> dict:
    return {
        "run_id": "run-1",
        "trial_id": "run-1-t005",
        "index": 5,
        "seed": 7,
        "dataset_id": "sklearn:iris",
        "search_space": {},
        "budget": {"epochs": 6, "batch_size": 16, "patience": 6},
        "parameters": {
            "objective": "val_accuracy",
            "direction": "maximize",
            "run_seed": 42,
            "artifact_dir": str(tmp_path),
            "search": search,
            "history": history,
        },
    }


def test_a_hopeless_trial_is_reported_pruned_without_an_artifact(tmp_path):
    history = [
        {"index": i, "status": "succeeded", "value": 1.0, "curve": [1.0] * 6} for i in range(5)
    ]
    report = ops.run_trial(trial_payload(tmp_path, {"pruner": "median"}, history))
    assert report["status"] == "pruned"
    assert report["metrics"]["epochs_run"] == 1
    assert len(report["metrics"]["curve"]["val_accuracy"]) == 1
    assert math.isfinite(report["metrics"]["val_accuracy"])
    assert report["artifact_uri"] is None
    assert ops.record_trial({**report, "contract": "trial_reported"})["status"] == "pruned"
    # The same trial without a pruner trains to its end.
    report = ops.run_trial(trial_payload(tmp_path, {}, history))
    assert report["status"] == "succeeded" and report["metrics"]["epochs_run"] == 6


def test_a_tpe_trial_end_to_end_is_deterministic(tmp_path):
    history = [finished(i, 100 + i, 0.5 + 0.03 * i) for i in range(12)]
    payload = trial_payload(tmp_path, {"strategy": "tpe", "pruner": "asha"}, history)
    first = ops.run_trial(payload)
    again = ops.run_trial(payload)
    assert first["candidate_id"] == again["candidate_id"]
    assert first["metrics"] == again["metrics"]


def test_cmaes_without_its_package_is_refused_up_front_with_the_install_hint(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "cmaes", None)
    payload = {
        "run_id": "run-1",
        "timestamp": "2024-01-01T00:00:00Z",
        "dataset_id": "sklearn:iris",
        "parameters": {"seed": 3, "artifact_dir": str(tmp_path), "search": {"strategy": "cmaes"}},
    }
    with pytest.raises(OpError) as info:
        ops.start_run(payload)
    assert info.value.error_class == "dependency"
    assert "cerebros_service[search]" in info.value.message


@pytest.mark.parametrize(
    ("search", "key"),
    [
        ({"strategy": "grid"}, "search.strategy"),
        ({"pruner": "hyperband"}, "search.pruner"),
        ({"sampler": "tpe"}, "search.sampler"),
    ],
)
def test_unknown_strategies_and_pruners_are_refused_naming_the_key(tmp_path, search, key):
    payload = {
        "run_id": "run-1",
        "timestamp": "2024-01-01T00:00:00Z",
        "dataset_id": "sklearn:iris",
        "parameters": {"seed": 3, "artifact_dir": str(tmp_path), "search": search},
    }
    with pytest.raises(OpError) as info:
        ops.start_run(payload)
    assert info.value.error_class == "contract"
    assert info.value.details["key"] == key


@pytest.mark.parametrize(
    ("strategy", "pruner"), [("tpe", "asha"), ("cmaes", "median"), ("tpe", "median")]
)
def test_one_study_plans_a_trial_as_the_two_separate_studies_do(strategy, pruner, monkeypatch):
    """With an Optuna strategy and a pruner, ``plan_trial`` builds one study for both: the
    same architecture as ``suggest_architecture`` and the same decisions as ``epoch_hook``."""
    from cerebros_service.nas import planning

    space = normalize_search_space(SPACES[1])
    # Enough finished trials with curves for the median rule to decide.
    history = check_history(
        [finished(i, 300 + i, 0.4 + 0.05 * i) for i in range(8)]
        + [{"index": 8, "status": "running"}]
    )
    search = {"strategy": strategy, "pruner": pruner}
    builds = []
    real_build = planning.build_study

    def counting(*args, **kwargs):
        builds.append(1)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(planning, "build_study", counting)
    arch, hook = planning.plan_trial(space, 21, search, history, "maximize", "val_accuracy", 3)
    assert len(builds) == 1
    assert arch == suggest_architecture(space, 21, strategy, history, "maximize")
    separate = epoch_hook(pruner, history, "maximize", "val_accuracy", epochs=3)
    assert hook is not None and separate is not None
    decisions = []
    for epoch, value in [(1, 0.33), (2, 0.36)]:
        decisions.append(hook(epoch, {"val_accuracy": value}))
        assert decisions[-1] == separate(epoch, {"val_accuracy": value})
    assert any(decisions)  # a poor curve is pruned: the comparison was not vacuous


def test_without_an_optuna_pair_the_plan_is_the_strategy_and_the_pruner_alone():
    from cerebros_service.nas.planning import plan_trial

    space = normalize_search_space(SPACES[1])
    arch, hook = plan_trial(
        space, 5, {"strategy": "random", "pruner": "none"}, HISTORY, "maximize", "val_accuracy", 3
    )
    assert arch == sample_architecture(space, 5) and hook is None
    arch, hook = plan_trial(
        space, 5, {"strategy": "tpe", "pruner": "none"}, HISTORY, "maximize", "val_accuracy", 3
    )
    assert arch == suggest_architecture(space, 5, "tpe", HISTORY, "maximize") and hook is None
    arch, hook = plan_trial(
        space, 5, {"strategy": "random", "pruner": "asha"}, HISTORY, "maximize", "val_accuracy", 3
    )
    assert arch == sample_architecture(space, 5) and hook is not None
