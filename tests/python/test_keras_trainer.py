"""The Keras trainer (nas/keras_trainer.py) and the ``trainer`` parameter (nas/trainers.py).

Kept small: Keras compiles every new model (JIT), which dominates these tests' time.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cerebros_service
from cerebros_service._dispatch import OpError
from cerebros_service.nas import keras_trainer
from cerebros_service.nas.datasets import load_dataset
from cerebros_service.nas.network import Network
from cerebros_service.nas.search_space import Architecture

# keras is in requirements-dev.txt; imported as the trainer imports it (JAX backend).
keras = keras_trainer.require_keras()

#: Two levels with a lateral connection, a skip from the input and every unit used.
ARCH = Architecture(
    levels=((5, 3), (4,)),
    inputs=((((0, 0),), ((0, 0),)), (((0, 0), (1, 0), (1, 1)),)),
    laterals=(((), (0,)), ((),)),
    activation="relu",
    learning_rate=0.01,
)


def payload(tmp_path: Path, trainer: str | None, **overrides) -> dict:
    parameters = {"run_seed": 1, "artifact_dir": str(tmp_path), "objective": "val_accuracy"}
    if trainer is not None:
        parameters["trainer"] = trainer
    return {
        "run_id": "run-k",
        "trial_id": "trial-0",
        "index": 0,
        "seed": 3,
        "dataset_id": "sklearn:iris",
        "search_space": {"maximum_levels": 2, "maximum_neurons_per_unit": 16},
        "budget": {"epochs": 3, "batch_size": 16, "patience": 3},
        "parameters": parameters,
        **overrides,
    }


def test_the_model_wires_units_as_the_numpy_network_does():
    model = keras_trainer.build_model(ARCH, 4, 3, seed=1)
    widths = {layer.name: layer.kernel.shape for layer in model.layers if hasattr(layer, "kernel")}
    # unit (1,1) reads the input and, laterally, unit (1,0); (2,0) the input and both units.
    assert widths == {
        "unit_1_0": (4, 5),
        "unit_1_1": (4 + 5, 3),
        "unit_2_0": (4 + 5 + 3, 4),
        "output": (4, 3),
    }
    assert keras_trainer.n_params(model) == Network(ARCH, 4, 3, "classification").n_params
    again = keras_trainer.build_model(ARCH, 4, 3, seed=1)
    other = keras_trainer.build_model(ARCH, 4, 3, seed=2)
    for mine, same, different in zip(
        model.get_weights(), again.get_weights(), other.get_weights(), strict=True
    ):
        assert np.array_equal(mine, same)
        if mine.ndim == 2:  # kernels; biases start at zero for every seed
            assert not np.array_equal(mine, different)


def test_a_unit_that_feeds_nothing_counts_in_neither_trainer():
    # unit (1,1) reads the input but neither (2,0) nor a lateral reads it.
    dead = Architecture(
        levels=((5, 3), (4,)),
        inputs=((((0, 0),), ((0, 0),)), (((1, 0),),)),
        laterals=(((), ()), ((),)),
        activation="relu",
        learning_rate=0.01,
    )
    assert dead.live_units() == {(1, 0), (2, 0)}
    model = keras_trainer.build_model(dead, 4, 3, seed=1)
    assert "unit_1_1" not in {layer.name for layer in model.layers}
    expected = (4 * 5 + 5) + (5 * 4 + 4) + (4 * 3 + 3)
    assert keras_trainer.n_params(model) == expected
    assert Network(dead, 4, 3, "classification").n_params == expected


def test_the_epoch_hook_sees_every_epoch_and_can_prune():
    data = load_dataset("sklearn:iris", {}, 1)
    model = keras_trainer.build_model(ARCH, data.n_features, data.n_outputs, seed=1)
    seen: list[tuple[int, dict]] = []

    def hook(epoch: int, scores: dict) -> bool:
        seen.append((epoch, scores))
        return epoch == 2

    result = keras_trainer.train(
        model,
        data,
        epochs=5,
        batch_size=16,
        patience=None,
        learning_rate=0.01,
        seed=1,
        on_epoch=hook,
    )
    assert [epoch for epoch, _ in seen] == [1, 2]
    assert set(seen[0][1]) == {"val_loss", "val_accuracy", "train_loss"}
    assert seen[1][1]["val_loss"] == result.val_loss[1]
    assert result.pruned and result.epochs_run == 2 and result.ok
    assert not result.stopped_early


def test_a_keras_trial_reports_like_a_numpy_trial_and_its_artifact_loads(tmp_path):
    numpy_report = cerebros_service.run_trial(payload(tmp_path, None, trial_id="trial-n"))
    report = cerebros_service.run_trial(payload(tmp_path, "keras"))
    assert report["status"] == "succeeded", report
    assert report["parameters"]["trainer"] == "keras"
    assert numpy_report["parameters"]["trainer"] == "numpy"
    assert report["candidate_id"] == numpy_report["candidate_id"]  # the same architecture
    metrics = report["metrics"]
    assert set(metrics) == set(numpy_report["metrics"])
    assert set(metrics["curve"]) == {"val_loss", "val_accuracy", "train_loss"}
    assert metrics["epochs_run"] == 3

    path = Path(report["artifact_uri"].removeprefix("file://"))
    assert path.name == "trial-0.keras"
    blob = path.read_bytes()
    assert report["parameters"]["artifact"] == {
        "sha256": hashlib.sha256(blob).hexdigest(),
        "bytes": len(blob),
    }
    meta = keras_trainer.load_meta(report["artifact_uri"])
    assert meta["trainer"] == "keras" and meta["candidate_id"] == report["candidate_id"]

    # The saved model takes raw rows and gives the reported validation accuracy.
    model = keras.saving.load_model(path)
    data = load_dataset("sklearn:iris", {}, 1)
    raw = data.x_val.astype(np.float64) * data.x_std + data.x_mean
    predicted = model.predict(raw, verbose=0).argmax(axis=1)
    assert float(np.mean(predicted == data.y_val)) == pytest.approx(
        metrics["val_accuracy"], abs=0.04
    )


def test_a_keras_regression_artifact_predicts_in_the_targets_units(tmp_path):
    options = {"samples": 200, "features": 5, "informative": 3, "noise": 5.0}
    body = payload(tmp_path, "keras", dataset_id="synthetic:regression")
    body["parameters"].update(objective="val_rmse", dataset_options=options)
    report = cerebros_service.run_trial(body)
    assert report["status"] == "succeeded", report
    model = keras.saving.load_model(report["artifact_uri"].removeprefix("file://"))
    data = load_dataset("synthetic:regression", options, 1)
    raw = data.x_val.astype(np.float64) * data.x_std + data.x_mean
    predicted = model.predict(raw, verbose=0)[:, 0]
    rmse = float(np.sqrt(np.mean((predicted - data.y_val_raw) ** 2)))
    assert rmse == pytest.approx(report["metrics"]["val_rmse"], rel=1e-3)


def test_keras_missing_is_a_dependency_error_up_front(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "keras", None)  # "import keras" raises ImportError
    run = {
        "run_id": "run-k",
        "timestamp": "2026-01-01T00:00:00Z",
        "dataset_id": "sklearn:iris",
        "parameters": {"seed": 1, "trainer": "keras", "artifact_dir": str(tmp_path)},
    }
    for op, body in (("start_run", run), ("run_trial", payload(tmp_path, "keras"))):
        with pytest.raises(OpError) as caught:
            getattr(cerebros_service, op)(body)
        error = caught.value
        assert error.error_class == "dependency", op
        assert error.details["key"] == "trainer"
        assert "pip install cerebros_service[keras]" in error.message
    assert not (tmp_path / "run-k").exists()  # refused before the run's folder


def test_health_lists_the_devices_when_asked():
    devices = cerebros_service.health({"devices": True})["devices"]
    assert devices and all(re.fullmatch(r"(cpu|gpu|tpu):\d+", d) for d in devices), devices
    assert cerebros_service.health({})["devices"] == devices  # keras is imported now


def test_an_unknown_trainer_is_a_contract_error(tmp_path):
    with pytest.raises(OpError) as caught:
        cerebros_service.run_trial(payload(tmp_path, "torch"))
    assert caught.value.error_class == "contract"
    assert caught.value.details["key"] == "parameters.trainer"


def test_the_numpy_trainer_stays_the_default_and_never_imports_keras(tmp_path):
    code = (
        "import json, sys, cerebros_service\n"
        "report = cerebros_service.run_trial(json.loads(sys.argv[1]))\n"
        "health = cerebros_service.health({})\n"
        "print(json.dumps([report['artifact_uri'], 'keras' in sys.modules, health]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(payload(tmp_path, None))],
        env={**os.environ, "PYTHONPATH": str(Path(cerebros_service.__file__).parents[1])},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    uri, imported, health = json.loads(out.stdout)
    assert uri.endswith("/trial-0.npz")
    assert not imported
    assert "devices" not in health


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ({}, "false"),
        ({"XLA_PYTHON_CLIENT_PREALLOCATE": "true"}, "true"),
        ({"XLA_CLIENT_MEM_FRACTION": ".3"}, None),
    ],
)
def test_jax_takes_gpu_memory_as_needed_unless_the_user_says(setting, expected):
    """Parallel trial processes share a GPU: JAX's default (75 % of it at the first
    operation) would starve the second one."""
    names = ("XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_CLIENT_MEM_FRACTION")
    env = {k: v for k, v in os.environ.items() if k not in names} | setting
    code = (
        "import os\n"
        "from cerebros_service.nas import keras_trainer\n"
        "keras_trainer.require_keras()\n"
        "print(os.environ.get('XLA_PYTHON_CLIENT_PREALLOCATE'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == str(expected)
