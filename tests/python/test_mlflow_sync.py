"""``sync_mlflow`` against a real MLflow sqlite tracking store: nesting, params, metrics and
curves, the artifact, idempotency (retries duplicate nothing), outage reporting, requests
MLflow refuses for good, and several processes creating one database at once."""

import json
import os
import socket
import subprocess
import sys
import time
import uuid

import pytest

mlflow = pytest.importorskip("mlflow")

from cerebros_service import sync_mlflow  # noqa: E402
from cerebros_service._dispatch import OpError  # noqa: E402


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory) -> str:
    # One database for the module: creating MLflow's schema takes seconds.
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def client(tracking_uri):
    return mlflow.MlflowClient(tracking_uri=tracking_uri)


def _run(name: str, **extra) -> dict:
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    run = {
        "run_id": run_id,
        "name": name,
        "status": "running",
        "objective": "val_accuracy",
        "dataset_id": "sklearn:iris",
        "spec": {
            "name": name,
            "seed": 3,
            "search_space": {"activation": ["relu", "elu"], "maximum_levels": 2},
            "budget": {"trials": 2, "epochs": 3},
        },
        "created_at": "2026-01-01T00:00:00.000Z",
        "started_at": "2026-01-01T00:00:01.000Z",
    }
    run.update(extra)
    return run


def _trial(run: dict, index: int, artifact=None, status="succeeded") -> dict:
    return {
        "trial_id": f"{run['run_id']}-t{index:03}",
        "index": index,
        "seed": 100 + index,
        "status": status,
        "metrics": {
            "val_accuracy": 0.8 + index / 100,
            "params": 120,
            "epochs_run": 3,
            "curve": {"val_loss": [1.0, 0.6, 0.5], "val_accuracy": [0.5, 0.7, 0.8]},
        },
        "parameters": {"levels": [[4, 8]], "activation": "relu", "learning_rate": 0.01},
        "started_at": "2026-01-01T00:00:02.000Z",
        "finished_at": "2026-01-01T00:00:03.000Z",
        "artifact_path": str(artifact) if artifact else None,
    }


def _runs(client, run: dict):
    experiment = client.get_experiment_by_name(run["name"])
    return client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`cerebros.run_id` = '{run['run_id']}'"
    )


def test_a_trial_becomes_a_child_of_the_run_with_params_metrics_curves_and_artifact(
    tracking_uri, client, tmp_path
):
    artifact = tmp_path / "t0.npz"
    artifact.write_bytes(b"weights")
    run = _run("nesting")
    trial = _trial(run, 0, artifact)
    payload = {"tracking_uri": tracking_uri, "run": run, "trial": trial}
    result = sync_mlflow({**payload, "artifact_root": str(tmp_path)})
    parent_id = result["run"]["mlflow_run_id"]
    child_id = result["trial"]["mlflow_run_id"]
    assert result["run"]["created"] and result["trial"]["created"]

    parent = client.get_run(parent_id)
    assert parent.info.status == "RUNNING"
    assert parent.data.tags["run_id"] == run["run_id"]
    assert parent.data.tags["correlation_id"] == run["run_id"]
    assert parent.data.params["budget.trials"] == "2"
    assert parent.data.params["search_space.activation"] == '["relu","elu"]'

    child = client.get_run(child_id)
    assert child.data.tags["mlflow.parentRunId"] == parent_id
    assert child.data.tags["cerebros.trial_id"] == trial["trial_id"]
    assert child.info.status == "FINISHED"
    assert child.data.params["levels"] == "[[4,8]]"
    assert child.data.params["learning_rate"] == "0.01"
    assert child.data.metrics["val_accuracy"] == pytest.approx(0.8)
    history = client.get_metric_history(child_id, "curve/val_loss")
    assert [(m.step, m.value) for m in history] == [(1, 1.0), (2, 0.6), (3, 0.5)]
    assert [f.path for f in client.list_artifacts(child_id)] == ["t0.npz"]


def test_retried_syncs_duplicate_nothing_and_the_final_one_terminates_the_parent(
    tracking_uri, client
):
    run = _run("idempotency")
    first = sync_mlflow({"tracking_uri": tracking_uri, "run": run, "trial": _trial(run, 0)})
    again = sync_mlflow({"tracking_uri": tracking_uri, "run": run, "trial": _trial(run, 0)})
    assert again["run"] == {**first["run"], "created": False}
    assert again["trial"] == {**first["trial"], "created": False}
    sync_mlflow({"tracking_uri": tracking_uri, "run": run, "trial": _trial(run, 1)})

    done = dict(
        run,
        status="succeeded",
        best_metric=0.81,
        best_trial_id=f"{run['run_id']}-t001",
        trials_completed=2,
        trials_planned=2,
        finished_at="2026-01-01T00:00:09.000Z",
    )
    for _ in range(2):  # the final sync, retried
        final = sync_mlflow({"tracking_uri": tracking_uri, "run": done, "final": True})
        assert final["run"]["mlflow_run_id"] == first["run"]["mlflow_run_id"]

    runs = _runs(client, run)
    assert len(runs) == 3  # one parent, two children
    parent = client.get_run(first["run"]["mlflow_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["status"] == "succeeded"
    assert parent.data.metrics["best_val_accuracy"] == pytest.approx(0.81)
    child = first["trial"]["mlflow_run_id"]
    assert len(client.get_metric_history(child, "curve/val_loss")) == 3
    assert len(client.get_metric_history(child, "val_accuracy")) == 1


def test_an_interrupted_sync_is_completed_without_duplicates(tracking_uri, client):
    run = _run("partial")
    trial = _trial(run, 0)
    parent = sync_mlflow({"tracking_uri": tracking_uri, "run": run})["run"]["mlflow_run_id"]
    # A child created by a sync that died before logging anything.
    experiment = client.get_experiment_by_name("partial").experiment_id
    client.create_run(
        experiment,
        tags={"cerebros.trial_id": trial["trial_id"], "mlflow.parentRunId": parent},
    )
    result = sync_mlflow({"tracking_uri": tracking_uri, "run": run, "trial": trial})
    assert not result["trial"]["created"]
    assert len(_runs(client, run)) == 1  # the parent; the child was found, not re-created
    child = client.get_run(result["trial"]["mlflow_run_id"])
    assert child.data.metrics["val_accuracy"] == pytest.approx(0.8)
    assert child.info.status == "FINISHED"


def test_a_stale_mlflow_id_falls_back_to_the_tag(tracking_uri):
    run = _run("stale")
    first = sync_mlflow({"tracking_uri": tracking_uri, "run": run})
    stale = dict(run, mlflow_run_id=uuid.uuid4().hex)
    again = sync_mlflow({"tracking_uri": tracking_uri, "run": stale})
    assert again["run"]["mlflow_run_id"] == first["run"]["mlflow_run_id"]


def test_a_failed_trial_is_synced_as_failed_with_its_error(tracking_uri, client):
    run = _run("failed-trial")
    trial = _trial(run, 0, status="failed")
    trial.update(metrics={}, parameters={}, error={"class": "timeout", "message": "too slow"})
    trial["artifact_path"] = "/nonexistent/t0.npz"
    payload = {"tracking_uri": tracking_uri, "run": run, "trial": trial}
    child = sync_mlflow({**payload, "artifact_root": "/nonexistent"})["trial"]
    found = client.get_run(child["mlflow_run_id"])
    assert found.info.status == "FAILED"
    assert found.data.tags["error"] == "too slow"
    assert found.data.tags["cerebros.artifact_missing"] == "/nonexistent/t0.npz"


@pytest.mark.parametrize("where", ["outside", "symlink", "no_root"])
def test_an_artifact_outside_the_runs_folder_is_never_uploaded(
    tracking_uri, client, tmp_path, where
):
    root = tmp_path / "artifacts" / "run-1"
    root.mkdir(parents=True)
    secret = tmp_path / "secret.txt"
    secret.write_text("not for MLflow")
    artifact = secret if where == "outside" else root / "t0.npz"
    if where == "symlink":
        artifact.symlink_to(secret)
    elif where == "no_root":
        artifact.write_bytes(b"weights")
    run = _run(f"refused-{where}")
    payload = {"tracking_uri": tracking_uri, "run": run, "trial": _trial(run, 0, artifact)}
    if where != "no_root":
        payload["artifact_root"] = str(root)
    child = sync_mlflow(payload)["trial"]["mlflow_run_id"]
    assert client.list_artifacts(child) == []
    assert client.get_run(child).data.tags["cerebros.artifact_refused"]


def test_an_unreachable_server_is_a_system_error_marked_unreachable():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends
    with pytest.raises(OpError) as info:
        sync_mlflow({"tracking_uri": f"http://127.0.0.1:{port}", "run": _run("down")})
    assert info.value.error_class == "system_error"
    assert info.value.details["unreachable"] is True


def test_a_payload_without_tracking_uri_is_a_contract_error():
    with pytest.raises(OpError) as info:
        sync_mlflow({"run": _run("x")})
    assert info.value.error_class == "contract"


def test_a_probe_writes_nothing_and_reports_an_unreachable_server(tmp_path):
    database = tmp_path / "new.db"
    reply = sync_mlflow({"tracking_uri": f"sqlite:///{database}", "probe": True})
    assert reply["ok"] and reply["mlflow_version"] == mlflow.__version__
    assert not database.exists()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(OpError) as info:
        sync_mlflow({"tracking_uri": f"http://127.0.0.1:{port}", "probe": True})
    assert info.value.error_class == "system_error"


def test_a_request_mlflow_refuses_is_a_permanent_exception(tracking_uri):
    run = _run("refused")
    trial = _trial(run, 0)
    trial["metrics"] = {"val_accuracy": 0.8, "bad?name": 1.0}
    with pytest.raises(OpError) as info:
        sync_mlflow({"tracking_uri": tracking_uri, "run": run, "trial": trial})
    assert info.value.error_class == "exception"
    assert info.value.details["permanent"] is True
    assert info.value.details["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "bad?name" in str(info.value)


def test_an_experiment_name_mlflow_refuses_is_that_items_permanent_failure(tracking_uri):
    # The experiment is named by the run's spec: a name MLflow refuses (over 500
    # characters) is this run's problem, not the server's, so it must not hold up the
    # other runs' items as a server-wide system_error would.
    with pytest.raises(OpError) as info:
        sync_mlflow(
            {"tracking_uri": tracking_uri, "run": _run("long"), "experiment_name": "x" * 600}
        )
    assert info.value.error_class == "exception"
    assert info.value.details["permanent"] is True


def test_a_trial_without_a_finish_time_still_syncs_its_metrics(tracking_uri, client):
    run = _run("no-finish-time")
    trial = _trial(run, 0)
    del trial["finished_at"], trial["started_at"]
    child = sync_mlflow({"tracking_uri": tracking_uri, "run": run, "trial": trial})["trial"]
    found = client.get_run(child["mlflow_run_id"])
    assert found.data.metrics["val_accuracy"] == pytest.approx(0.8)


#: One process of the race below: imports MLflow, says it is ready, waits for the start
#: signal, then makes its first sync (which creates the database).
_RACER = """
import json, os, sys, time
base, uri, index = sys.argv[1], sys.argv[2], sys.argv[3]
import mlflow
from cerebros_service import sync_mlflow
open(f"{base}.ready{index}", "w").close()
while not os.path.exists(f"{base}.go"):
    time.sleep(0.001)
run = {"run_id": f"race-{index}", "name": "race", "status": "running", "spec": {"name": "race"}}
try:
    sync_mlflow({"tracking_uri": uri, "run": run})
    print(json.dumps({"ok": True}))
except Exception as exc:
    print(json.dumps({"ok": False, "error": str(exc)}))
"""


def test_processes_creating_one_new_database_at_once_all_succeed(tmp_path, python_dir):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    base = str(tmp_path / "signal")
    env = dict(os.environ, PYTHONPATH=str(python_dir))
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, base, uri, str(index)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for index in range(3)
    ]
    deadline = time.monotonic() + 120
    while not all(os.path.exists(f"{base}.ready{i}") for i in range(3)):
        assert time.monotonic() < deadline, "the racers did not start"
        assert all(r.poll() is None for r in racers), [r.communicate() for r in racers]
        time.sleep(0.01)
    open(f"{base}.go", "w").close()
    outcomes = []
    for racer in racers:
        out, err = racer.communicate(timeout=120)
        assert racer.returncode == 0, err
        outcomes.append(json.loads(out.strip().splitlines()[-1]))
    assert outcomes == [{"ok": True}] * 3
    # The database is whole: every run is there, and a new one can be added.
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("race").experiment_id
    assert len(client.search_runs([experiment])) == 3
    sync_mlflow({"tracking_uri": uri, "run": _run("after-the-race")})


def test_a_pruned_trial_is_synced_as_killed_with_the_epochs_it_ran(tracking_uri, client):
    run = _run("pruned-trial")
    trial = _trial(run, 1, status="pruned")
    trial["metrics"].update(
        epochs_run=1, curve={"val_loss": [1.0], "val_accuracy": [0.5]}, val_accuracy=0.5
    )
    child = sync_mlflow({"tracking_uri": tracking_uri, "run": run, "trial": trial})["trial"]
    found = client.get_run(child["mlflow_run_id"])
    assert found.info.status == "KILLED"
    assert found.data.tags["status"] == "pruned"
    assert "error" not in found.data.tags
    assert found.data.metrics["epochs_run"] == 1
    history = client.get_metric_history(child["mlflow_run_id"], "curve/val_accuracy")
    assert [m.value for m in history] == [0.5]
