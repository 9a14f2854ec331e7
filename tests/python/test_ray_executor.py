"""The ray executor's pieces that need no cluster (tests/ray.rs drives a real one)."""

import pytest

from cerebros_service import mlflow_sync
from cerebros_service._dispatch import OpError
from cerebros_service.nas import datasets, ray_executor


def test_a_provided_dataset_is_returned_without_reading_its_file():
    datasets.clear_cache()
    try:
        data = datasets.load_dataset("sklearn:iris", {}, 3)
        missing = "csv:/nowhere/data.csv"
        datasets.provide_dataset(missing, {"validation_split": 0.2}, 3, data)
        assert datasets.load_dataset(missing, {}, 3) is data
        with pytest.raises(OpError):
            datasets.load_dataset(missing, {}, 4)  # another seed: not provided
    finally:
        datasets.clear_cache()


def test_placement_becomes_mlflow_tags():
    placement = {"node_id": "ab12", "host": "node-1", "worker_pid": 4242}
    assert mlflow_sync._placement_tags(placement) == {
        "cerebros.node_id": "ab12",
        "cerebros.node_host": "node-1",
        "cerebros.worker_pid": "4242",
    }
    assert mlflow_sync._placement_tags(None) == {}


def test_an_unreachable_address_is_a_config_error_naming_it():
    with pytest.raises(OpError) as raised:
        ray_executor.connect({"address": "127.0.0.1:1"})
    assert raised.value.error_class == "config"
    assert "127.0.0.1:1" in raised.value.message and "ray start --head" in raised.value.message


def test_auto_that_finds_an_address_nobody_answers_is_a_config_error_naming_it(monkeypatch):
    # `auto` takes RAY_ADDRESS, or the file the last `ray start` left, as Ray does; a cluster
    # that is gone is refused at once, not after ray.init's minute of retries.
    pytest.importorskip("ray")
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    with pytest.raises(OpError) as raised:
        ray_executor.connect({"address": "auto"})
    assert raised.value.error_class == "config"
    # Ray names a loopback address by this host's own address: only the port is ours.
    assert ":1, the address auto found, does not answer" in raised.value.message


def test_waiting_on_an_unknown_handle_ends_it_with_a_contract_error_at_once():
    pytest.importorskip("ray")
    run = ray_executor._Run(("sklearn:iris", {}, 1), _FakeRef())
    ray_executor._runs["r-unknown"] = run
    try:
        payload = {"run_id": "r-unknown", "handles": ["nope"], "timeout_ms": 1000}
        done = ray_executor.wait(payload)["done"]
    finally:
        ray_executor._runs.pop("r-unknown")
    assert [(d["handle"], d["error"]["class"]) for d in done] == [("nope", "contract")]


def test_waiting_on_a_run_not_started_is_a_contract_error_naming_it():
    pytest.importorskip("ray")
    with pytest.raises(OpError) as raised:
        ray_executor.wait({"run_id": "r-never", "handles": [], "timeout_ms": 0})
    assert raised.value.error_class == "contract" and "r-never" in raised.value.message


@pytest.mark.parametrize(
    "payload",
    [
        {"run_id": "r", "handles": "h1"},
        {"run_id": "r", "handles": [1]},
        {"run_id": "r", "handles": ["h"], "timeout_ms": "5"},
        {"handles": []},
        {},
    ],
)
def test_a_malformed_wait_is_a_contract_error(payload):
    pytest.importorskip("ray")
    with pytest.raises(OpError) as raised:
        ray_executor.wait(payload)
    assert raised.value.error_class == "contract"


def test_a_submission_without_its_handle_is_a_contract_error():
    with pytest.raises(OpError) as raised:
        ray_executor.submit({"trial": {"run_id": "r"}, "module": "m"})
    assert raised.value.error_class == "contract" and "handle" in raised.value.message


class _FakeRef:
    """Stands for the ObjectRef of a run's dataset (only its id is read)."""

    def hex(self) -> str:
        return "00ff"


def test_a_trial_cancelled_before_its_submission_arrives_is_never_sent(monkeypatch):
    # The host cancels every handle it awaits, a submission still on its way included.
    pytest.importorskip("ray")
    monkeypatch.setattr(ray_executor, "_cancelled_early", {})
    monkeypatch.setitem(ray_executor._runs, "r", ray_executor._Run(("d", {}, 1), _FakeRef()))
    assert ray_executor.cancel({"handles": ["r-t003#7"]}) == {"cancelled": 0}
    submission = {"handle": "r-t003#7", "trial": {"run_id": "r"}, "module": "m"}
    with pytest.raises(OpError) as raised:
        ray_executor.submit(submission)
    assert raised.value.error_class == "cancelled"
    assert ray_executor._cancelled_early == {}  # remembered until its submission came


def test_trial_resources_no_live_node_has_are_refused_naming_the_key():
    # Ray keeps an infeasible task waiting: every attempt then ended at trial_timeout_ms as
    # if the trial were slow.
    from cerebros_service.nas.ray_executor import _check_feasible

    nodes = [
        {"Alive": True, "Resources": {"CPU": 2.0, "memory": 4 * 2**30}},
        {"Alive": True, "Resources": {"CPU": 1.0, "GPU": 1.0, "memory": 2**30}},
        {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0, "memory": 2**40}},
    ]
    _check_feasible({"trial_cpus": 1, "trial_gpus": 1}, nodes)
    _check_feasible({"trial_cpus": 2, "trial_memory_mb": 4096}, nodes)
    _check_feasible({}, [])
    for resources, key in [
        ({"trial_cpus": 1, "trial_gpus": 2}, "budget.trial_gpus"),
        ({"trial_cpus": 4}, "budget.trial_cpus"),
        ({"trial_cpus": 1, "trial_memory_mb": 8192}, "budget.trial_memory_mb"),
        # Each exists somewhere, never together on one node: named by the first asked.
        ({"trial_cpus": 2, "trial_gpus": 1}, "budget.trial_cpus"),
    ]:
        with pytest.raises(OpError) as err:
            _check_feasible(resources, nodes)
        assert err.value.error_class == "contract"
        assert err.value.details == {"key": key}, resources
