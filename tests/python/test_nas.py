"""Tests of the NAS side of the service: datasets, search space, network, trainer, ops."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cerebros_service
from cerebros_service._blas import BLAS_THREADS_ENV
from cerebros_service._dispatch import OpError, call_op, encode_result
from cerebros_service.nas import artifacts, datasets
from cerebros_service.nas.datasets import load_dataset
from cerebros_service.nas.network import Network, plan_layout
from cerebros_service.nas.search_space import (
    DEFAULT_SEARCH_SPACE,
    Architecture,
    mlp_architecture,
    normalize_search_space,
    sample_architecture,
)
from cerebros_service.nas.trainer import evaluate, train

DEMO_SPACE = dict(DEFAULT_SEARCH_SPACE)  # the example of DESIGN §4


def contract_failure(func, *args, **kwargs) -> OpError:
    with pytest.raises(OpError) as info:
        func(*args, **kwargs)
    assert info.value.error_class == "contract", info.value.message
    return info.value


def trial_payload(tmp_path: Path, **overrides) -> dict:
    payload = {
        "run_id": "run-1",
        "trial_id": "trial-0",
        "index": 0,
        "seed": 7,
        "dataset_id": "sklearn:digits",
        "search_space": DEMO_SPACE,
        "budget": {"epochs": 4, "batch_size": 64, "patience": 3},
        "parameters": {
            "objective": "val_accuracy",
            "direction": "maximize",
            "run_seed": 42,
            "artifact_dir": str(tmp_path / "artifacts"),
        },
    }
    parameters = overrides.pop("parameters", None)
    payload.update(overrides)
    if parameters is not None:
        payload["parameters"] = {**payload["parameters"], **parameters}
    return payload


def run_payload(tmp_path: Path, **overrides) -> dict:
    payload = {
        "run_id": "run-1",
        "timestamp": "2024-01-01T00:00:00Z",
        "dataset_id": "sklearn:iris",
        "search_space": DEMO_SPACE,
        "objective": "val_accuracy",
        "budget": {"trials": 4, "epochs": 5, "batch_size": 32, "patience": 2},
        "parameters": {"direction": "maximize", "seed": 3, "artifact_dir": str(tmp_path)},
    }
    payload.update(overrides)
    return payload


# -- datasets -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "task", "n_samples", "n_features", "n_classes"),
    [
        ("digits", "classification", 1797, 64, 10),
        ("wine", "classification", 178, 13, 3),
        ("breast_cancer", "classification", 569, 30, 2),
        ("iris", "classification", 150, 4, 3),
        ("diabetes", "regression", 442, 10, 0),
    ],
)
def test_sklearn_datasets(name, task, n_samples, n_features, n_classes):
    data = load_dataset(f"sklearn:{name}", {}, 0)
    assert data.task == task
    assert (data.n_samples, data.n_features, data.n_classes) == (n_samples, n_features, n_classes)
    assert data.x_train.shape[0] + data.x_val.shape[0] == n_samples
    assert data.x_val.shape[0] == pytest.approx(0.2 * n_samples, abs=n_classes + 1)
    assert data.x_train.dtype == np.float32
    assert np.allclose(data.x_train.mean(axis=0), 0.0, atol=1e-4)
    assert not data.x_train.flags.writeable
    summary = data.summary()
    assert summary["n_train"] + summary["n_validation"] == n_samples
    assert ("n_classes" in summary) == (task == "classification")


def test_split_is_stratified_and_seeded():
    data = load_dataset("sklearn:iris", {"validation_split": 0.2}, 5)
    assert np.bincount(data.y_val).tolist() == [10, 10, 10]
    again = load_dataset("sklearn:iris", {"validation_split": 0.2}, 5)
    assert again is data  # cached
    datasets.clear_cache()
    fresh = load_dataset("sklearn:iris", {"validation_split": 0.2}, 5)
    assert fresh is not data
    assert np.array_equal(fresh.x_val, data.x_val)
    other = load_dataset("sklearn:iris", {"validation_split": 0.2}, 6)
    assert not np.array_equal(other.x_val, data.x_val)
    larger = load_dataset("sklearn:iris", {"validation_split": 0.5}, 5)
    assert larger.x_val.shape[0] == 75


def test_regression_targets_are_standardised():
    data = load_dataset("sklearn:diabetes", {}, 0)
    assert abs(float(data.y_train.mean())) < 1e-5
    assert data.y_std > 10
    restored = data.y_val.astype(np.float64) * data.y_std + data.y_mean
    assert np.allclose(restored, data.y_val_raw, atol=1e-3)


def write_csv(path: Path, text: str) -> str:
    path.write_text(text)
    return f"csv:{path}"


def test_csv_dataset(tmp_path):
    rows = ["a,b,target"] + [f"{i},{(i * 7) % 5},{i % 2}" for i in range(40)]
    data = load_dataset(write_csv(tmp_path / "d.csv", "\n".join(rows) + "\n"), {}, 0)
    assert data.task == "classification"
    assert (data.n_samples, data.n_features, data.n_classes) == (40, 2, 2)
    assert data.classes == [0, 1]


def test_csv_custom_target_text_labels_and_regression(tmp_path):
    rows = ["label,x1,x2"] + [f"{'cat' if i % 3 else 'dog'},{i},{i * 0.5}" for i in range(30)]
    data = load_dataset(write_csv(tmp_path / "l.csv", "\n".join(rows)), {"target": "label"}, 0)
    assert data.task == "classification"
    assert data.classes == ["cat", "dog"]
    rows = ["x,target"] + [f"{i},{i * 0.37 + 0.1}" for i in range(30)]
    data = load_dataset(write_csv(tmp_path / "r.csv", "\n".join(rows)), {}, 0)
    assert data.task == "regression"
    rows = ["x,target"] + [f"{i},{i % 2}" for i in range(30)]
    forced = load_dataset(write_csv(tmp_path / "b.csv", "\n".join(rows)), {"task": "regression"}, 0)
    assert forced.task == "regression"


@pytest.mark.parametrize(
    ("text", "options", "fragment"),
    [
        ("a,b\n1,2\n", {}, "target column 'target' not found"),
        ("a,target\n1,0\nx1,1\n", {}, "column 'a'"),
        ("a,target\n1,0\n2,1\n", {"target": "label"}, "'label' not found"),
        ("a,target\n1,0\n2\n", {}, "line 3 has 1 fields"),
        ("a,target\n1,0\nnan,1\n", {}, "non-finite"),
        ("a,target\n", {}, "no data rows"),
        ("", {}, "empty"),
        ("a,target\n1,x\n2,y\n", {"task": "regression"}, "column 'target'"),
    ],
)
def test_csv_errors(tmp_path, text, options, fragment):
    err = contract_failure(load_dataset, write_csv(tmp_path / "bad.csv", text), options, 0)
    assert fragment in err.message


def test_csv_non_numeric_names_column_and_value(tmp_path):
    text = "alpha,beta,target\n1,2,0\n3,oops,1\n"
    err = contract_failure(load_dataset, write_csv(tmp_path / "bad.csv", text), {}, 0)
    assert "'beta'" in err.message and "'oops'" in err.message and "line 3" in err.message
    assert err.details["column"] == "beta"


def test_missing_files(tmp_path):
    for kind in ("csv", "npz"):
        err = contract_failure(load_dataset, f"{kind}:{tmp_path}/nope.{kind}", {}, 0)
        assert "not found" in err.message and "nope" in err.message


def test_npz_dataset(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3))
    np.savez(tmp_path / "d.npz", X=x, y=(x[:, 0] > 0).astype(int))
    data = load_dataset(f"npz:{tmp_path / 'd.npz'}", {}, 0)
    assert (data.task, data.n_features, data.n_classes) == ("classification", 3, 2)
    np.savez(tmp_path / "r.npz", X=x, y=x @ np.array([1.5, -2.0, 0.25]))
    assert load_dataset(f"npz:{tmp_path / 'r.npz'}", {}, 0).task == "regression"


@pytest.mark.parametrize(
    ("arrays", "fragment"),
    [
        ({"X": np.zeros((4, 2))}, "lacks array 'y'"),
        ({"X": np.zeros(4), "y": np.zeros(4)}, "2-D"),
        ({"X": np.zeros((4, 2)), "y": np.zeros(3)}, "one value per row"),
        ({"X": np.array([["a", "b"]] * 4), "y": np.zeros(4)}, "numeric"),
    ],
)
def test_npz_errors(tmp_path, arrays, fragment):
    np.savez(tmp_path / "bad.npz", **arrays)
    err = contract_failure(load_dataset, f"npz:{tmp_path / 'bad.npz'}", {}, 0)
    assert fragment in err.message


def test_npz_not_a_zip(tmp_path):
    (tmp_path / "junk.npz").write_text("not a zip")
    err = contract_failure(load_dataset, f"npz:{tmp_path / 'junk.npz'}", {}, 0)
    assert "not a readable npz" in err.message


def test_an_npz_that_decompresses_past_its_bound_is_refused_before_it_is_read(
    tmp_path, monkeypatch
):
    # A few KB of compressed zeros can stand for gigabytes: judged from the archive's
    # directory, never by loading it.
    np.savez_compressed(tmp_path / "zeros.npz", X=np.zeros((4000, 100)), y=np.zeros(4000))
    monkeypatch.setattr(datasets, "MAX_NPZ_ARRAY_BYTES", 1_000_000)
    read = []
    monkeypatch.setattr(np, "load", lambda *a, **k: read.append(a))
    err = contract_failure(load_dataset, f"npz:{tmp_path / 'zeros.npz'}", {}, 0)
    assert "once decompressed" in err.message and not read


@pytest.mark.parametrize(
    ("dataset_id", "options", "key"),
    [
        ("sklearn:mnist", {}, "dataset_id"),
        ("parquet:x", {}, "dataset_id"),
        ("", {}, "dataset_id"),
        (7, {}, "dataset_id"),
        ("sklearn:iris", {"validation_split": 1.0}, "dataset_options.validation_split"),
        ("sklearn:iris", {"validation_split": 0}, "dataset_options.validation_split"),
        ("sklearn:iris", {"validation_split": "x"}, "dataset_options.validation_split"),
        ("sklearn:iris", {"shuffle": True}, "dataset_options.shuffle"),
        ("sklearn:iris", {"task": "ranking"}, "dataset_options.task"),
        ("sklearn:iris", {"task": "regression"}, "dataset_options.task"),
        ("sklearn:iris", {"target": "y"}, "dataset_options.target"),
    ],
)
def test_dataset_validation_errors(dataset_id, options, key):
    err = contract_failure(load_dataset, dataset_id, options, 0)
    assert err.details["key"] == key
    assert err.message.startswith(key)


# -- search space ---------------------------------------------------------------------------


def test_search_space_defaults_and_idempotence():
    space = normalize_search_space(None)
    assert space == {**DEFAULT_SEARCH_SPACE}
    assert normalize_search_space(space) == space
    custom = normalize_search_space(
        {"activation": "TANH", "learning_rate": (0.01, 0.01), "maximum_levels": 2.0}
    )
    assert custom["activation"] == ["tanh"]
    assert custom["learning_rate"] == [0.01, 0.01]
    assert custom["maximum_levels"] == 2 and isinstance(custom["maximum_levels"], int)


@pytest.mark.parametrize(
    ("raw", "key", "fragment"),
    [
        ({"maximum_depth": 3}, "search_space.maximum_depth", "unknown"),
        ({"minimum_levels": 4, "maximum_levels": 2}, "search_space.minimum_levels", "exceed"),
        (
            {"minimum_neurons_per_unit": 65},
            "search_space.minimum_neurons_per_unit",
            "exceed",
        ),
        ({"minimum_units_per_level": 0}, "search_space.minimum_units_per_level", "at least 1"),
        ({"maximum_neurons_per_unit": -5}, "search_space.maximum_neurons_per_unit", "at least"),
        ({"maximum_levels": 2.5}, "search_space.maximum_levels", "integer"),
        ({"maximum_levels": True}, "search_space.maximum_levels", "integer"),
        ({"maximum_neurons_per_unit": 10**6}, "search_space.maximum_neurons_per_unit", "most"),
        ({"p_lateral_connection": 1.5}, "search_space.p_lateral_connection", "[0, 1]"),
        ({"p_predecessor_connection": -0.1}, "search_space.p_predecessor_connection", "[0, 1]"),
        ({"activation": ["relu", "swish"]}, "search_space.activation", "swish"),
        ({"activation": []}, "search_space.activation", "non-empty"),
        ({"learning_rate": 0.01}, "search_space.learning_rate", "pair"),
        ({"learning_rate": [0.01]}, "search_space.learning_rate", "pair"),
        ({"learning_rate": [0.1, 0.01]}, "search_space.learning_rate", "low <= high"),
        ({"learning_rate": [0, 0.01]}, "search_space.learning_rate", "low must be in (0, 1]"),
        ({"learning_rate": ["a", 0.01]}, "search_space.learning_rate", "number"),
        ({"learning_rate": [0.1, 5.0]}, "search_space.learning_rate", "high must be in (0, 1]"),
    ],
)
def test_search_space_errors_name_the_key(raw, key, fragment):
    err = contract_failure(normalize_search_space, raw)
    assert err.details["key"] == key
    assert err.message.startswith(key)
    assert fragment in err.message


def test_search_space_must_be_a_table():
    assert contract_failure(normalize_search_space, [1, 2]).details["key"] == "search_space"


def test_sampling_is_deterministic_and_varied():
    space = normalize_search_space(DEMO_SPACE)
    assert sample_architecture(space, 11) == sample_architecture(space, 11)
    archs = [sample_architecture(space, seed) for seed in range(20)]
    assert len({a.candidate_id for a in archs}) == 20
    assert len({tuple(map(len, a.levels)) for a in archs}) > 1
    assert all(a.activation in ("relu", "elu") for a in archs)
    assert all(0.001 <= a.learning_rate <= 0.01 for a in archs)


def test_sampling_respects_bounds_and_dag():
    space = normalize_search_space(
        {
            "minimum_levels": 2,
            "maximum_levels": 4,
            "minimum_units_per_level": 2,
            "maximum_units_per_level": 4,
            "minimum_neurons_per_unit": 3,
            "maximum_neurons_per_unit": 5,
            "p_lateral_connection": 0.7,
            "p_predecessor_connection": 0.3,
        }
    )
    laterals = 0
    for seed in range(50):
        arch = sample_architecture(space, seed)
        assert 2 <= len(arch.levels) <= 4
        for k, level in enumerate(arch.levels, start=1):
            assert 2 <= len(level) <= 4
            assert all(3 <= n <= 5 for n in level)
            for j in range(len(level)):
                preds = arch.inputs[k - 1][j]
                assert any(p == k - 1 for p, _ in preds)  # one from the previous level
                assert all(p < k for p, _ in preds)  # only earlier levels
                assert all(i < j for i in arch.laterals[k - 1][j])  # only earlier units
                laterals += len(arch.laterals[k - 1][j])
        assert Architecture.from_dict(json.loads(json.dumps(arch.to_dict()))) == arch
    assert laterals > 0


def test_architecture_refuses_cycles():
    with pytest.raises(ValueError, match="later unit"):
        Architecture(
            levels=((4, 4),),
            inputs=((((0, 0),), ((0, 0),)),),
            laterals=(((1,), ()),),
            activation="relu",
            learning_rate=0.01,
        )


def test_no_laterals_when_probability_zero():
    space = normalize_search_space({"p_lateral_connection": 0, "minimum_units_per_level": 3})
    assert all(sample_architecture(space, s).lateral_connections == 0 for s in range(20))


# -- network and trainer --------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["relu", "elu", "tanh", "sigmoid", "gelu"])
def test_gradients_match_finite_differences(activation):
    space = normalize_search_space(
        {
            "minimum_levels": 2,
            "maximum_levels": 2,
            "minimum_units_per_level": 3,
            "maximum_units_per_level": 3,
            "minimum_neurons_per_unit": 3,
            "maximum_neurons_per_unit": 4,
            "p_lateral_connection": 1.0,
            "activation": activation,
        }
    )
    arch = sample_architecture(space, 3)
    assert arch.lateral_connections == 6
    net = Network(arch, 5, 3, "classification")
    rng = np.random.default_rng(0)
    net.initialize(rng)
    x = rng.normal(size=(8, 5)).astype(np.float32)
    onehot = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 8)]

    def loss() -> float:
        out, _ = net.forward(x)
        out = out.astype(np.float64)
        out -= out.max(axis=1, keepdims=True)
        logp = out - np.log(np.exp(out).sum(axis=1, keepdims=True))
        return float(-(logp * onehot).sum() / 8)

    out, pre = net.forward(x)
    p = np.exp(out - out.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    buf, dbuf = net.scratch(8)
    net.backward(buf, dbuf, ((p - onehot) / 8).astype(np.float32), pre)
    grads = net.grads.astype(np.float64)
    direction = rng.normal(size=net.params.size)
    for stage in net.stages:  # move only along connected weights
        if stage.mask is not None:
            direction[stage.w_slice] *= stage.mask.ravel()
            assert not net.grads[stage.w_slice][stage.mask.ravel() == 0].any()
    direction /= np.linalg.norm(direction)
    base = net.params.copy()
    eps = 1e-2
    net.params[...] = base + eps * direction
    up = loss()
    net.params[...] = base - eps * direction
    down = loss()
    net.params[...] = base
    numeric = (up - down) / (2 * eps)
    assert numeric == pytest.approx(float(grads @ direction), rel=2e-2, abs=1e-3)


def test_parameter_count_ignores_masked_weights():
    arch = Architecture(
        levels=((4, 2), (3,)),
        inputs=((((0, 0),), ((0, 0),)), (((0, 0), (1, 1)),)),
        laterals=(((), (0,)), ((),)),
        activation="relu",
        learning_rate=0.01,
    )
    net = Network(arch, 5, 2, "classification")
    # unit (1,0): 5*4+4; unit (1,1): (5+4)*2+2; unit (2,0): (5+2)*3+3; output: 3*2+2
    assert net.n_params == 24 + 20 + 24 + 8
    assert arch.connections == 4 and arch.lateral_connections == 1


def test_the_planned_layout_sizes_the_parameter_vector_without_building_it():
    space = normalize_search_space({**DEMO_SPACE, "maximum_levels": 4})
    for seed in range(20):
        arch = sample_architecture(space, seed)
        net = Network(arch, 13, 3, "classification")
        assert plan_layout(arch, 13).dense_parameters(3) == net.params.size, seed


def test_a_network_too_large_to_train_fails_as_its_trial_at_once(tmp_path):
    # 3 levels of 2 units of 4 096 neurons, fully connected: ~200M weights, ~4.7 GiB to
    # train; it must fail as one trial before anything is allocated, naming what to lower.
    space = {
        **DEMO_SPACE,
        "minimum_levels": 3,
        "maximum_levels": 3,
        "minimum_units_per_level": 2,
        "maximum_units_per_level": 2,
        "minimum_neurons_per_unit": 4096,
        "maximum_neurons_per_unit": 4096,
        "p_predecessor_connection": 1.0,
    }
    payload = trial_payload(tmp_path, search_space=space)
    report = call_op(cerebros_service, "run_trial", payload)
    assert report["status"] == "failed"
    assert report["artifact_uri"] is None
    assert report["metrics"]["epochs_run"] == 0
    (reason,) = report["warnings"]
    assert "MiB to train" in reason and "maximum_neurons_per_unit" in reason, reason
    # A smaller budget.trial_memory_mb lowers the limit for networks that fit the default.
    small = {**space, "minimum_neurons_per_unit": 256, "maximum_neurons_per_unit": 256}
    fits = trial_payload(tmp_path, search_space=small, budget={"epochs": 1})
    assert call_op(cerebros_service, "run_trial", fits)["status"] == "succeeded"
    tight = trial_payload(tmp_path, search_space=small, budget={"epochs": 1, "trial_memory_mb": 1})
    report = call_op(cerebros_service, "run_trial", tight)
    assert report["status"] == "failed" and "1 MiB a trial may use" in report["warnings"][0]


def test_trainer_learns_iris():
    data = load_dataset("sklearn:iris", {}, 0)
    net = Network(mlp_architecture([16], "relu", 0.01), 4, 3, "classification")
    result = train(net, data, epochs=30, batch_size=16, patience=None, learning_rate=0.01, seed=0)
    assert result.epochs_run == 30
    assert result.best(result.val_metric) >= 0.85
    assert result.train_loss[-1] < result.train_loss[0]


def test_trainer_learns_digits_subset_in_few_epochs():
    data = load_dataset("sklearn:digits", {}, 1)
    space = normalize_search_space({**DEMO_SPACE, "minimum_levels": 2, "maximum_levels": 2})
    arch = sample_architecture(space, 0)
    net = Network(arch, data.n_features, data.n_outputs, data.task)
    result = train(net, data, epochs=5, batch_size=64, patience=3, learning_rate=0.005, seed=0)
    assert result.best(result.val_metric) >= 0.9


def test_trials_in_threads_of_one_interpreter_train_one_at_a_time():
    """Two numpy trainings started together in two threads do not interleave: the first
    one's first epoch waits (up to 2 s) for the other to report an epoch, which it only can
    if both train at once."""
    import threading

    from cerebros_service.nas.trainers import fit

    data = load_dataset("sklearn:iris", {}, 0)
    arch = mlp_architecture([8], "relu", 0.01)
    budget = {"epochs": 3, "batch_size": 16, "patience": 3}
    order: list[str] = []
    other_trained = threading.Event()
    first_trains = threading.Event()

    def hook(name):
        def on_epoch(epoch, values):
            order.append(name)
            first_trains.set()
            if name == "b":
                other_trained.set()
            elif epoch == 1:
                other_trained.wait(timeout=2)
            return False

        return on_epoch

    first = threading.Thread(
        target=lambda: fit("numpy", arch, data, budget=budget, seed=0, on_epoch=hook("a"))
    )
    first.start()
    first_trains.wait(timeout=10)
    second = threading.Thread(
        target=lambda: fit("numpy", arch, data, budget=budget, seed=0, on_epoch=hook("b"))
    )
    second.start()
    first.join()
    second.join()
    assert order == ["a"] * 3 + ["b"] * 3


def test_a_trial_waiting_for_its_turn_to_train_can_be_cancelled():
    """A thread queued behind another training returns to Python bytecode regularly, so an
    asynchronous exception (how the in-process bridge cancels a call) ends its wait."""
    import ctypes
    import threading
    import time

    from cerebros_service.nas.trainer import one_training_at_a_time

    release = threading.Event()
    outcome: list[str] = []

    def holder():
        with one_training_at_a_time():
            release.wait(timeout=10)

    def waiter():
        try:
            with one_training_at_a_time():
                outcome.append("trained")
        except KeyboardInterrupt:
            outcome.append("cancelled")

    holding = threading.Thread(target=holder)
    holding.start()
    waiting = threading.Thread(target=waiter)
    waiting.start()
    time.sleep(0.2)
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(waiting.ident), ctypes.py_object(KeyboardInterrupt)
    )
    waiting.join(timeout=2)
    cancelled_while_held = not waiting.is_alive()
    release.set()
    holding.join()
    waiting.join()
    assert cancelled_while_held and outcome == ["cancelled"]


def test_early_stopping_restores_best_weights():
    data = load_dataset("sklearn:iris", {"validation_split": 0.5}, 0)
    net = Network(mlp_architecture([64, 64], "relu", 0.05), 4, 3, "classification")
    result = train(net, data, epochs=200, batch_size=8, patience=2, learning_rate=0.05, seed=1)
    assert result.stopped_early
    assert result.best_epoch < result.epochs_run
    assert result.epochs_run - result.best_epoch == 2
    best = min(result.val_loss)
    assert result.val_loss[result.best_epoch - 1] == best
    assert result.val_loss[-1] > best
    val_loss, val_acc = evaluate(net, data)
    assert val_loss == best  # bit for bit: the restored weights are those of the best epoch
    assert val_acc == result.best(result.val_metric)


# -- ops ------------------------------------------------------------------------------------


TRIAL_FIELDS = {
    "contract",
    "version",
    "run_id",
    "trial_id",
    "status",
    "metrics",
    "parameters",
    "artifact_uri",
    "duration_ms",
    "candidate_id",
    "warnings",
}


def test_ops_are_public_and_the_module_stays_light():
    for name in ("start_run", "run_trial", "record_trial", "finalize_run"):
        assert callable(getattr(cerebros_service, name))
    code = "import sys, cerebros_service; print('numpy' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(Path(cerebros_service.__file__).parents[1])},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "False"


def test_start_run(tmp_path):
    result = call_op(cerebros_service, "start_run", run_payload(tmp_path))
    json.loads(encode_result("start_run", result))
    assert result["run_id"] == "run-1"
    assert result["status"] == "running"
    assert result["task"] == "classification"
    assert result["objective"] == "val_accuracy"
    assert result["direction"] == "maximize"
    assert result["search_space"] == normalize_search_space(DEMO_SPACE)
    dataset = result["dataset"]
    assert dataset["id"] == "sklearn:iris"
    assert (dataset["n_samples"], dataset["n_features"], dataset["n_classes"]) == (150, 4, 3)
    assert dataset["n_train"] + dataset["n_validation"] == 150
    assert (tmp_path / "run-1").is_dir()


def test_start_run_defaults_objective_by_task(tmp_path):
    payload = run_payload(tmp_path, dataset_id="sklearn:diabetes", objective=None)
    payload["parameters"] = {"artifact_dir": str(tmp_path)}
    result = cerebros_service.start_run(payload)
    assert (result["task"], result["objective"], result["direction"]) == (
        "regression",
        "val_rmse",
        "minimize",
    )
    assert "n_classes" not in result["dataset"]
    payload = run_payload(tmp_path, objective="val_loss")
    assert cerebros_service.start_run(payload)["objective"] == "val_loss"
    assert (
        cerebros_service.start_run(run_payload(tmp_path, objective="accuracy"))["objective"]
        == "val_accuracy"
    )


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"run_id": None}, "run_id"),
        ({"timestamp": None}, "timestamp"),
        ({"dataset_id": None}, "dataset_id"),
        ({"dataset_id": "sklearn:nope"}, "dataset_id"),
        ({"objective": "val_rmse"}, "objective"),
        ({"objective": "f1"}, "objective"),
        ({"search_space": {"maximum_levels": 0}}, "search_space.maximum_levels"),
        ({"budget": {"trials": 0}}, "budget.trials"),
        ({"budget": {"epochs": -1}}, "budget.epochs"),
        ({"contract": "trial_requested"}, "contract"),
        ({"version": 2}, "version"),
        ({"parameters": {"direction": "up"}}, "parameters.direction"),
        ({"parameters": {"seed": -1}}, "parameters.seed"),
        (
            {"parameters": {"dataset_options": {"validation_split": 2}}},
            "dataset_options.validation_split",
        ),
    ],
)
def test_start_run_errors(tmp_path, changes, key):
    payload = run_payload(tmp_path, **changes)
    err = contract_failure(cerebros_service.start_run, payload)
    assert err.details["key"] == key, err.message


def test_start_run_regression_objective_mismatch(tmp_path):
    payload = run_payload(tmp_path, dataset_id="sklearn:diabetes", objective="val_accuracy")
    err = contract_failure(cerebros_service.start_run, payload)
    assert "classification" in err.message


def test_run_trial_report_shape_and_artifact(tmp_path):
    report = call_op(cerebros_service, "run_trial", trial_payload(tmp_path))
    json.loads(encode_result("run_trial", report))
    assert TRIAL_FIELDS <= set(report)
    assert report["contract"] == "trial_reported" and report["version"] == 1
    assert report["status"] == "succeeded"
    assert report["warnings"] == []
    metrics = report["metrics"]
    assert {"val_accuracy", "val_loss", "params", "epochs_run", "train_loss", "curve"} <= set(
        metrics
    )
    assert 0.5 < metrics["val_accuracy"] <= 1.0
    assert metrics["epochs_run"] <= 4
    assert set(metrics["curve"]) == {"val_loss", "val_accuracy", "train_loss"}
    assert all(len(c) == metrics["epochs_run"] for c in metrics["curve"].values())
    params = report["parameters"]
    assert {
        "levels",
        "activation",
        "learning_rate",
        "connections",
        "lateral_connections",
        "batch_size",
        "epochs",
        "artifact",
    } <= set(params)
    arch = sample_architecture(normalize_search_space(DEMO_SPACE), 7)
    assert params["levels"] == [list(level) for level in arch.levels]
    assert report["candidate_id"] == arch.candidate_id
    assert len(report["candidate_id"]) == 12
    assert isinstance(report["duration_ms"], int)

    uri = report["artifact_uri"]
    assert uri.startswith("file:///")
    path = Path(uri.removeprefix("file://"))
    assert path == (tmp_path / "artifacts" / "run-1" / "trial-0.npz").resolve()
    blob = path.read_bytes()
    assert params["artifact"]["bytes"] == len(blob)
    import hashlib

    assert params["artifact"]["sha256"] == hashlib.sha256(blob).hexdigest()
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    with np.load(path, allow_pickle=False) as archive:
        assert "output_weight" in archive.files and "stage0_weight" in archive.files
        meta = json.loads(str(archive["meta"]))
    assert meta["candidate_id"] == report["candidate_id"]
    assert meta["metrics"]["val_accuracy"] == metrics["val_accuracy"]

    net, meta, arrays = artifacts.load_artifact(uri)
    data = load_dataset("sklearn:digits", {}, 42)
    assert np.array_equal(arrays["x_mean"], data.x_mean)
    accuracy = float(np.mean(net.predict(data.x_val).argmax(axis=1) == data.y_val))
    assert accuracy == metrics["val_accuracy"]


def test_run_trial_is_deterministic(tmp_path):
    first = cerebros_service.run_trial(trial_payload(tmp_path))
    datasets.clear_cache()
    second = cerebros_service.run_trial(trial_payload(tmp_path, trial_id="trial-0b"))
    assert first["metrics"] == second["metrics"]
    assert first["candidate_id"] == second["candidate_id"]
    weights = [artifacts.load_artifact(r["artifact_uri"])[0].params for r in (first, second)]
    assert np.array_equal(weights[0], weights[1])
    other = cerebros_service.run_trial(trial_payload(tmp_path, seed=8, trial_id="t8"))
    assert other["candidate_id"] != first["candidate_id"]
    # ... and in a fresh process (same machine, same environment)
    code = (
        "import json, sys, cerebros_service; "
        "print(json.dumps(cerebros_service.run_trial(json.loads(sys.argv[1]))['metrics']))"
    )
    payload = trial_payload(tmp_path, trial_id="trial-0c")
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(payload)],
        env={**os.environ, "PYTHONPATH": str(Path(cerebros_service.__file__).parents[1])},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert json.loads(out.stdout) == first["metrics"]


def test_run_trial_accepts_raw_and_default_search_space(tmp_path):
    payload = trial_payload(tmp_path, dataset_id="sklearn:iris", search_space=None)
    payload["budget"] = {"epochs": 2}
    report = cerebros_service.run_trial(payload)
    assert report["status"] == "succeeded"
    assert report["parameters"]["batch_size"] == 64
    assert report["parameters"]["activation"] in DEFAULT_SEARCH_SPACE["activation"]


def test_run_trial_regression_reports_rmse(tmp_path):
    payload = trial_payload(
        tmp_path,
        dataset_id="sklearn:diabetes",
        parameters={"objective": "val_rmse", "direction": "minimize"},
    )
    payload["budget"] = {"epochs": 20, "batch_size": 32, "patience": 5}
    report = cerebros_service.run_trial(payload)
    metrics = report["metrics"]
    assert "val_accuracy" not in metrics
    assert set(metrics["curve"]) == {"val_loss", "val_rmse", "train_loss"}
    data = load_dataset("sklearn:diabetes", {}, 42)
    # the loss is the MSE of standardised targets; the RMSE is in the target's units
    assert metrics["val_rmse"] == pytest.approx(np.sqrt(metrics["val_loss"]) * data.y_std, rel=1e-4)
    assert 30 < metrics["val_rmse"] < 80  # the target's standard deviation is about 77


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"seed": None}, "seed"),
        ({"seed": -3}, "seed"),
        ({"seed": "7"}, "seed"),
        ({"index": None}, "index"),
        ({"trial_id": ""}, "trial_id"),
        ({"run_id": 5}, "run_id"),
        ({"budget": {"batch_size": 0}}, "budget.batch_size"),
        ({"budget": {"patience": -1}}, "budget.patience"),
        ({"search_space": {"activation": "softplus"}}, "search_space.activation"),
        ({"parameters": {"objective": "val_rmse"}}, "parameters.objective"),
        ({"parameters": {"run_seed": 1.5}}, "parameters.run_seed"),
        ({"parameters": {"dataset_options": {"bogus": 1}}}, "dataset_options.bogus"),
        ({"contract": "trial_reported"}, "contract"),
    ],
)
def test_run_trial_errors(tmp_path, changes, key):
    parameters = changes.pop("parameters", None)
    payload = trial_payload(tmp_path, **changes)
    if parameters:
        payload["parameters"].update(parameters)
    err = contract_failure(cerebros_service.run_trial, payload)
    assert err.details["key"] == key, err.message


def test_unwritable_artifact_dir_is_a_system_error(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    payload = trial_payload(tmp_path, parameters={"artifact_dir": str(blocker / "sub")})
    with pytest.raises(OpError) as info:
        cerebros_service.run_trial(payload)
    assert info.value.error_class == "system_error"
    assert str(blocker) in info.value.message
    assert info.value.details["path"].startswith(str(blocker))
    with pytest.raises(OpError) as info:
        cerebros_service.start_run(run_payload(tmp_path, parameters={"artifact_dir": str(blocker)}))
    assert info.value.error_class == "system_error"


def test_full_disk_is_a_system_error_and_leaves_no_temp_file(tmp_path, monkeypatch):
    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(artifacts.os, "replace", no_space)
    with pytest.raises(OpError) as info:
        cerebros_service.run_trial(trial_payload(tmp_path))
    err = info.value
    assert err.error_class == "system_error"
    assert "No space left on device" in err.message
    assert err.details["path"].endswith("trial-0.npz")
    assert err.details["errno"] == errno.ENOSPC
    assert list((tmp_path / "artifacts" / "run-1").iterdir()) == []


def test_ids_are_made_safe_for_paths(tmp_path):
    path = artifacts.artifact_path(str(tmp_path), "../../etc", "a/b")
    assert path.parent.parent == tmp_path
    assert ".." not in path.parts
    assert artifacts.safe_name("trial-01_x.y") == "trial-01_x.y"
    assert artifacts.safe_name("a/b") != artifacts.safe_name("a_b")


def test_record_trial():
    report = {
        "contract": "trial_reported",
        "version": 1,
        "run_id": "r",
        "trial_id": "t",
        "status": "succeeded",
        "metrics": {"val_accuracy": 0.9},
        "duration_ms": 12,
        "warnings": [],
    }
    ack = call_op(cerebros_service, "record_trial", report)
    assert ack == {"run_id": "r", "trial_id": "t", "status": "succeeded", "recorded": True}
    for changes, key in [
        ({"trial_id": None}, "trial_id"),
        ({"run_id": ""}, "run_id"),
        ({"status": None}, "status"),
        ({"status": "done"}, "status"),
        ({"metrics": [1]}, "metrics"),
        ({"duration_ms": -1}, "duration_ms"),
        ({"warnings": "x"}, "warnings"),
        ({"contract": "run_finalized"}, "contract"),
        ({"version": 3}, "version"),
    ]:
        err = contract_failure(cerebros_service.record_trial, {**report, **changes})
        assert err.details["key"] == key


def test_finalize_run():
    payload = {
        "run_id": "r",
        "status": "succeeded",
        "metrics": {"val_accuracy": 0.97},
        "best_trial_id": "t3",
        "duration_ms": 1000,
    }
    assert call_op(cerebros_service, "finalize_run", payload) == {
        "run_id": "r",
        "status": "succeeded",
        "finalized": True,
        "best_trial_id": "t3",
    }
    assert (
        cerebros_service.finalize_run({"run_id": "r", "status": "timeout"})["best_trial_id"] is None
    )
    for changes, key in [
        ({"run_id": None}, "run_id"),
        ({"status": "running"}, "status"),
        ({"best_trial_id": 3}, "best_trial_id"),
        ({"metrics": "x"}, "metrics"),
        ({"returncode": "0"}, "returncode"),
    ]:
        err = contract_failure(cerebros_service.finalize_run, {**payload, **changes})
        assert err.details["key"] == key


def test_demo_search_space_reaches_target_accuracy(tmp_path):
    """A shortened demo: the best of 4 digits trials of the example space is >= 0.95."""
    best = 0.0
    for index in range(4):
        payload = trial_payload(tmp_path, index=index, seed=1000 + index, trial_id=f"t{index}")
        payload["budget"] = {"epochs": 10, "batch_size": 64, "patience": 3}
        best = max(best, cerebros_service.run_trial(payload)["metrics"]["val_accuracy"])
    assert best >= 0.95


def test_divergence_gives_a_failed_trial(tmp_path, monkeypatch):
    from cerebros_service.nas import ops

    data = load_dataset("sklearn:iris", {}, 0)
    net = Network(mlp_architecture([8], "relu", 1e20), 4, 3, "classification")
    with np.errstate(all="ignore"):
        result = train(net, data, epochs=5, batch_size=8, patience=None, learning_rate=1e20, seed=0)
    assert result.diverged and not result.ok

    real_plan = ops.plan_trial

    def reckless(space, seed, *search):
        arch, on_epoch = real_plan(space, seed, *search)
        return Architecture.from_dict({**arch.to_dict(), "learning_rate": 1e20}), on_epoch

    monkeypatch.setattr(ops, "plan_trial", reckless)
    payload = trial_payload(tmp_path, dataset_id="sklearn:iris")
    report = call_op(cerebros_service, "run_trial", payload)
    json.loads(encode_result("run_trial", report))  # no NaN leaks into the result
    assert report["status"] == "failed"
    assert report["artifact_uri"] is None
    assert "diverged" in report["warnings"][0]
    assert "val_accuracy" not in report["metrics"]
    assert report["metrics"]["curve"]["val_loss"] == [None]


def test_concurrent_trials_match_sequential_ones(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    def one(seed: int) -> dict:
        payload = trial_payload(tmp_path, seed=seed, trial_id=f"c{seed}", dataset_id="sklearn:wine")
        payload["budget"] = {"epochs": 3, "batch_size": 16}
        return cerebros_service.run_trial(payload)["metrics"]

    datasets.clear_cache()
    with ThreadPoolExecutor(2) as pool:
        parallel = list(pool.map(one, range(4)))
    assert parallel == [one(seed) for seed in range(4)]


@pytest.mark.parametrize(
    ("environment", "threads"),
    [({}, 1), ({BLAS_THREADS_ENV: "off"}, None), ({"OPENBLAS_NUM_THREADS": "2"}, None)],
)
def test_importing_the_service_sizes_blas_pools_before_numpy_loads(environment, threads):
    # A pool sized when the library loads is what keeps a trial's sums in one order (a
    # limit set on a running pool did not always take, and the same seed gave other
    # metrics). The environment's own choice wins; `off` leaves BLAS as numpy alone would.
    def pool_sizes(first_import: str) -> list[int]:
        script = (
            f"import {first_import}, numpy, threadpoolctl, json; "
            "print(json.dumps([p['num_threads'] for p in threadpoolctl.threadpool_info() "
            "if p['internal_api'] == 'openblas']))"
        )
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in (BLAS_THREADS_ENV, "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
        }
        env.update(environment)
        run = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
        )
        return json.loads(run.stdout)

    sizes = pool_sizes("cerebros_service")
    assert sizes == [threads or size for size in pool_sizes("json")], sizes
    assert sizes


def test_blas_threads_limits_blas_pools_and_scans_the_libraries_once(monkeypatch):
    import threadpoolctl

    from cerebros_service.nas import trainer

    monkeypatch.setenv(BLAS_THREADS_ENV, "1")
    made = []
    real = threadpoolctl.ThreadpoolController

    def counting() -> threadpoolctl.ThreadpoolController:
        made.append(1)
        return real()

    monkeypatch.setattr(threadpoolctl, "ThreadpoolController", counting)
    monkeypatch.setattr(trainer, "_blas_controller", None)
    for _ in range(3):
        with trainer.blas_threads():
            blas = [pool for pool in real().info() if pool["user_api"] == "blas"]
            assert blas and all(pool["num_threads"] == 1 for pool in blas)
    assert len(made) == 1  # kept while no module was imported
    sys.modules["_cerebros_test_new_module"] = sys  # as an import would
    try:
        with trainer.blas_threads():
            pass
    finally:
        del sys.modules["_cerebros_test_new_module"]
    assert len(made) == 2


def test_live_units_follow_lateral_and_skip_connections_backwards():
    # The last level is live; both its units read (1,0): (1,1) and (1,2) feed nothing.
    arch = Architecture(
        levels=((4, 4, 4), (3, 3)),
        inputs=(
            (((0, 0),), ((0, 0),), ((0, 0),)),
            (((1, 0),), ((1, 0),)),
        ),
        laterals=(((), (), ()), ((), ())),
        activation="relu",
        learning_rate=0.01,
    )
    assert arch.live_units() == {(1, 0), (2, 0), (2, 1)}
    # A unit of an earlier level read only by a unit that is itself live through a lateral.
    chained = Architecture(
        levels=((4, 4), (3, 3), (2,)),
        inputs=(
            (((0, 0),), ((0, 0),)),
            (((1, 0),), ((1, 1),)),
            (((2, 1),),),
        ),
        laterals=(((), ()), ((), (0,)), ((),)),
        activation="relu",
        learning_rate=0.01,
    )
    # (3,0) reads (2,1); (2,1) reads (1,1) and, laterally, (2,0); (2,0) reads (1,0).
    assert chained.live_units() == {(3, 0), (2, 1), (2, 0), (1, 1), (1, 0)}
