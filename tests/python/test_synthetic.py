"""The ``synthetic:classification`` and ``synthetic:regression`` datasets (nas/synthetic.py)."""

import json
from pathlib import Path

import numpy as np
import pytest

from cerebros_service._dispatch import OpError
from cerebros_service.nas import datasets
from cerebros_service.nas.datasets import load_dataset
from cerebros_service.nas.ops import start_run

CASES = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures" / "spec_cases.json").read_text()
)["datasets"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['dataset']}-{json.dumps(c['options'])}")
def test_the_service_decides_each_shared_dataset_case_as_the_host(case):
    if case["error"] is None:
        load_dataset(case["dataset"], case["options"], 3)
        return
    with pytest.raises(OpError) as caught:
        load_dataset(case["dataset"], case["options"], 3)
    assert caught.value.error_class == "contract"
    # The payload's key is dataset_id where the spec's is dataset.
    expected = "dataset_id" if case["error"] == "dataset" else case["error"]
    assert caught.value.details["key"] == expected
    assert caught.value.message.startswith(expected)


def test_classification_has_the_asked_shape_and_classes():
    options = {"samples": 600, "features": 12, "informative": 4, "classes": 5, "noise": 0.0}
    data = load_dataset("synthetic:classification", options, 7)
    assert (data.task, data.n_samples, data.n_features, data.n_classes) == (
        "classification",
        600,
        12,
        5,
    )
    assert data.summary()["n_validation"] == 120
    # Stratified: every class is in the validation split in its share.
    assert np.bincount(data.y_val).tolist() == [24] * 5


def test_regression_has_the_asked_shape_and_noise_widens_the_target():
    options = {"samples": 400, "features": 6, "informative": 3}
    quiet = load_dataset("synthetic:regression", options, 7)
    assert (quiet.task, quiet.n_samples, quiet.n_features) == ("regression", 400, 6)
    assert quiet.n_classes == 0
    noisy = load_dataset("synthetic:regression", {**options, "noise": 500}, 7)
    assert noisy.y_std > 2 * quiet.y_std


def test_same_seed_gives_the_same_rows_and_another_seed_others():
    options = {"samples": 300, "features": 10, "informative": 3, "classes": 3}
    first = load_dataset("synthetic:classification", options, 11)
    datasets.clear_cache()
    again = load_dataset("synthetic:classification", options, 11)
    assert again is not first
    assert np.array_equal(again.x_train, first.x_train)
    assert np.array_equal(again.y_val, first.y_val)
    other = load_dataset("synthetic:classification", options, 12)
    assert not np.array_equal(other.x_mean, first.x_mean)


def test_defaults_come_from_the_rules_table():
    data = load_dataset("synthetic:classification", {}, 0)
    assert (data.n_samples, data.n_features, data.n_classes) == (1000, 20, 2)


def test_start_run_reports_a_synthetic_dataset(tmp_path):
    info = start_run(
        {
            "contract": "run_started",
            "version": 1,
            "run_id": "r1",
            "timestamp": "2026-01-01T00:00:00Z",
            "dataset_id": "synthetic:regression",
            "objective": "val_rmse",
            "parameters": {
                "seed": 5,
                "dataset_options": {"samples": 100, "features": 4, "informative": 2},
                "artifact_dir": str(tmp_path),
            },
        }
    )
    assert info["task"] == "regression"
    assert info["dataset"]["n_samples"] == 100
    assert info["dataset"]["n_features"] == 4
