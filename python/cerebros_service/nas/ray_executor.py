"""The ``ray`` executor's driver side (DESIGN §12): trials as Ray tasks.

The host's run worker stays the orchestrator (store, retries, timeouts, events); through the
bridge it calls the ops of :mod:`cerebros_service` that land here:

* ``ray_connect``: ``ray.init`` once per process (``address``: ``auto``, ``ray://HOST:PORT``,
  ``HOST:PORT``, or ``None`` for a local Ray started here, whatever ``RAY_ADDRESS`` says),
  with the service's folders on the workers' ``PYTHONPATH``; an unreachable cluster is a
  ``config`` error naming the address;
* ``ray_start_run``: loads the run's dataset once and puts it in the object store;
* ``ray_submit``: one trial as a remote task under the caller's handle (``max_retries=0``:
  the store is the one record of attempts) with the spec's CPUs, GPUs and memory; returns
  at once;
* ``ray_wait``: one call for every trial of a run in flight: blocks (at most
  ``timeout_ms``) until any has ended, submitted before the call or during it, then returns
  each ended one's report and where it ran (node id, host name, worker pid), or its error
  (``subprocess_exit`` when its worker died);
* ``ray_cancel``: ``ray.cancel(ref, force=True)``, which kills the worker running it;
* ``ray_end_run``: forgets the run's dataset;
* ``ray_disconnect``: ``ray.shutdown()`` before the host exits (Ray's threads must not be
  torn down by the exit itself).

The remote task imports the configured service module on its node and calls its
``run_trial`` with the very payload the ``local`` executor sends, so a trial's result does
not depend on the executor.
"""

from __future__ import annotations

import importlib
import os
import queue
import socket
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from .._dispatch import OpError, exception_error
from .checks import opt_mapping, req_str

__all__ = ["cancel", "connect", "disconnect", "end_run", "start_run", "submit", "wait"]

#: The oldest Ray this executor is tested with (``pip install cerebros_service[ray]``).
MIN_RAY_VERSION = (2, 60)


class _Run:
    """A run started on Ray: its dataset in the object store, and the queue its trials'
    handles are put on when their tasks end (by Ray's thread, through their futures)."""

    def __init__(self, dataset_key: tuple, dataset_ref: Any) -> None:
        self.dataset_key = dataset_key  # (dataset id, options, run seed)
        self.dataset_ref = dataset_ref
        self.ended: queue.SimpleQueue[tuple[str, Future]] = queue.SimpleQueue()

    def send(self, handle: str, task: Any, args: tuple) -> None:
        """Submits ``task`` with ``args`` and files its ref under ``handle``; when the task
        ends, Ray's thread completes its future, which puts the handle and the future on
        this run's queue of ended trials. Called under ``_lock``."""
        ref = task.remote(*args)
        _refs[handle] = ref
        ended = self.ended
        ref.future().add_done_callback(lambda done: ended.put((handle, done)))


_lock = threading.Lock()
_connected: dict[str, Any] = {}
#: handle -> the ObjectRef of a submitted trial, until it ended and was waited for, or was
#: cancelled.
_refs: dict[str, Any] = {}
#: run id -> what its trials share: its dataset's key and ObjectRef, its ended trials.
_runs: dict[str, _Run] = {}
#: The trial task per resource shape (CPUs, GPUs, memory in MB).
_tasks: dict[tuple, Any] = {}
#: In a Ray worker: where it runs, found on its first trial.
_worker_placement: dict | None = None


def _ray():
    try:
        import ray
    except ImportError as exc:
        raise OpError(
            "dependency",
            "executor.kind = ray needs the ray package: pip install 'cerebros_service[ray]'",
            {"missing": "ray"},
        ) from exc
    version = tuple(int(p) for p in ray.__version__.split(".")[:2] if p.isdigit())
    if version < MIN_RAY_VERSION:
        raise OpError(
            "dependency",
            f"ray {ray.__version__} is too old for the ray executor; "
            f"install ray >= {'.'.join(map(str, MIN_RAY_VERSION))} (cerebros_service[ray])",
            {"ray_version": ray.__version__},
        )
    return ray


def _unreachable(address: str | None, exc: BaseException) -> OpError:
    shown = address if address is not None else "(unset: a local Ray)"
    return OpError(
        "config",
        f"executor.address = {shown}: cannot reach the Ray cluster: {type(exc).__name__}: "
        f"{exc}; hint: start one with `ray start --head` and set executor.address to the "
        "address it prints (or `auto` on a cluster node), or leave it unset for a local Ray",
        {"key": "executor.address", "address": shown},
    )


def _check_reachable(address: str) -> None:
    """Fail fast on a ``HOST:PORT`` nobody listens on (``ray.init`` would wait a minute)."""
    rest = address.removeprefix("ray://")
    host, _, port = rest.rpartition(":")
    with socket.create_connection((host.strip("[]"), int(port)), timeout=5):
        pass


def _init_address(address: str | None) -> str:
    """What ``ray.init`` is given for ``executor.address``, checked to answer first.

    Unset is a local Ray started here (DESIGN §12): ``"local"``, since Ray's own default
    would take ``RAY_ADDRESS`` or the address file the last ``ray start`` left in
    ``/tmp/ray``, and wait there for a cluster that may be long gone. ``auto`` is resolved
    as Ray resolves it (that file, or ``RAY_ADDRESS``) and the address found must answer.
    """
    if address is None:
        return "local"
    if address == "auto":
        from ray._private.services import canonicalize_bootstrap_address

        found = canonicalize_bootstrap_address("auto")  # ConnectionError when none is known
        if found is not None:
            try:
                _check_reachable(found)
            except OSError as exc:
                message = f"{found}, the address auto found, does not answer: {exc}"
                raise ConnectionError(message) from None
        return address
    _check_reachable(address)
    return address


def connect(payload: Mapping[str, Any]) -> dict:
    """``ray.init`` once per process; returns the Ray version and the cluster's nodes."""
    ray = _ray()
    address = payload.get("address")
    namespace = payload.get("namespace")
    paths = [str(Path(p)) for p in payload.get("python_paths") or []]
    service_root = str(Path(__file__).resolve().parents[2])
    with _lock:
        if not ray.is_initialized():
            try:
                target = _init_address(address)
                search = [*paths, service_root]
                env = {"PYTHONPATH": os.pathsep.join(dict.fromkeys(search))}
                ray.init(
                    address=target,
                    namespace=namespace,
                    ignore_reinit_error=True,
                    log_to_driver=False,
                    include_dashboard=False if address is None else None,
                    configure_logging=False,
                    runtime_env={"env_vars": env},
                )
            except OpError:
                raise
            except Exception as exc:  # ConnectionError, RuntimeError, OSError, ...
                raise _unreachable(address, exc) from None
            _connected.update(address=address, namespace=namespace)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
    return {
        "ray_version": ray.__version__,
        "address": _connected.get("address"),
        "namespace": ray.get_runtime_context().namespace,
        "nodes": len(nodes),
        "resources": {k: v for k, v in ray.cluster_resources().items() if "node:" not in k},
    }


def disconnect(payload: Mapping[str, Any]) -> dict:
    """``ray.shutdown()``: cancels nothing on its own (the host cancels its trials first)."""
    import ray

    with _lock:
        was = ray.is_initialized()
        _refs.clear()
        _tasks.clear()
        _runs.clear()
        _connected.clear()
        if was:
            ray.shutdown()
    return {"disconnected": was}


def start_run(payload: Mapping[str, Any]) -> dict:
    """Connect, then load the run's dataset here once and put it in the object store."""
    from .datasets import load_dataset, normalize_dataset_options

    info = connect(opt_mapping(payload, "connection"))
    ray = _ray()
    _check_feasible(opt_mapping(payload, "resources"), ray.nodes())
    run_id = req_str(payload, "run_id")
    params = opt_mapping(payload, "parameters")
    options = normalize_dataset_options(
        opt_mapping(params, "dataset_options", "parameters.dataset_options")
    )
    seed = int(params.get("run_seed", 0))
    dataset_id = payload.get("dataset_id")
    data = load_dataset(dataset_id, options, seed)
    with _lock:
        _runs[run_id] = _Run((dataset_id, options, seed), ray.put(data))
    return info


#: A trial's resources (``budget`` keys) and the names Ray gives them on a node.
_RESOURCE_KEYS = (
    ("trial_cpus", "CPU", 1),
    ("trial_gpus", "GPU", 1),
    ("trial_memory_mb", "memory", 2**20),
)


def _check_feasible(resources: Mapping[str, Any], nodes: list[dict]) -> None:
    """Refuse a trial no live node can ever run (``contract``, naming the budget key): Ray
    would keep its task waiting for resources that never come, and each attempt would end
    at ``trial_timeout_ms`` as if the trial had been slow."""
    wanted = {
        key: (name, float(resources[key]) * scale)
        for key, name, scale in _RESOURCE_KEYS
        if resources.get(key)
    }
    live = [n.get("Resources", {}) for n in nodes if n.get("Alive")]
    if not wanted or any(
        all(node.get(name, 0) >= amount for name, amount in wanted.values()) for node in live
    ):
        return
    lacking = [
        key
        for key, (name, amount) in wanted.items()
        if not any(node.get(name, 0) >= amount for node in live)
    ]
    short = (lacking or list(wanted))[0]  # none lacking: no node has them all at once
    largest = [
        ", ".join(f"{name} {node.get(name, 0):g}" for _, name, _ in _RESOURCE_KEYS[:2])
        + f", memory {node.get('memory', 0) / 2**20:,.0f} MB"
        for node in live
    ]
    asked = ", ".join(f"{key} = {resources[key]:g}" for key in wanted)
    raise OpError(
        "contract",
        f"budget.{short}: no node of the Ray cluster can run a trial asking {asked} "
        f"(its nodes: {'; '.join(largest) or 'none alive'}); its task would wait for good. "
        "Lower the budget's trial resources, or add a node that has them",
        {"key": f"budget.{short}"},
    )


def end_run(payload: Mapping[str, Any]) -> dict:
    """Forget the run's dataset (the object store frees it once no task holds it)."""
    with _lock:
        known = _runs.pop(req_str(payload, "run_id"), None) is not None
    return {"released": known}


def _remote_task(cpus: float, gpus: float, memory_mb: Any) -> Any:
    """The trial task with these resources, built once per resource shape: ``options()``
    costs about as much as a plain task's submission, and a per-trial task name as much
    again (the store, not Ray's dashboard, says which trial ran where)."""
    shape = (cpus, gpus, int(memory_mb) if memory_mb else None)
    task = _tasks.get(shape)
    if task is None:
        task = _ray().remote(max_retries=0, name="cerebros:trial")(_run_trial_task)
        task = task.options(
            num_cpus=cpus,
            num_gpus=gpus,
            memory=shape[2] * 1024 * 1024 if shape[2] else None,
        )
        _tasks[shape] = task
    return task


def submit(payload: Mapping[str, Any]) -> dict:
    """Submit one trial as a Ray task under ``handle`` (the caller's name for this
    submission, unique in the process); returns ``{"handle"}`` at once."""
    handle = req_str(payload, "handle")
    trial = opt_mapping(payload, "trial")
    run_id = req_str(trial, "run_id")
    module = req_str(payload, "module")
    resources = opt_mapping(payload, "resources")
    with _lock:
        run = _runs.get(run_id)
    if run is None:
        raise OpError("contract", f"run {run_id} was not started on Ray (ray_start_run)")
    task = _remote_task(
        float(resources.get("cpus", 1)),
        float(resources.get("gpus", 0)),
        resources.get("memory_mb"),
    )
    # The dataset's ref travels in a list, which Ray does not resolve: a worker fetches the
    # dataset once per run, not once per trial (see _run_trial_task).
    args = (module, dict(trial), run.dataset_key, [run.dataset_ref])
    with _lock:
        if handle in _refs:
            raise OpError("contract", f"ray_submit: the handle {handle} is already in use")
        if handle in _cancelled_early:
            del _cancelled_early[handle]
            raise OpError("cancelled", f"the trial {handle} was cancelled before it was sent")
        run.send(handle, task, args)
    return {"handle": handle}


#: The longest a ``ray_wait`` may block (its pool thread is held that long at most).
MAX_WAIT_MS = 1000


def wait(payload: Mapping[str, Any]) -> dict:
    """Wait up to ``timeout_ms`` for any trial of the run ``run_id`` to end (one submitted
    during the wait included), then return every one that has ended: ``{"done": [{"handle",
    "report", "placement"} | {"handle", "error"}]}``, ``error`` being an ``OpError``'s dict
    (class ``subprocess_exit`` when the task's worker or node died, ``cancelled`` when it
    was cancelled). ``handles``, the trials the caller awaits: one this process does not
    know is ended at once with a ``contract`` error. The wait is on a queue that Ray's own
    thread fills as tasks end: the GIL is released while waiting, the raylet never asked."""
    ray = _ray()
    run_id = req_str(payload, "run_id")
    handles = payload.get("handles", [])
    if not isinstance(handles, list) or not all(isinstance(h, str) for h in handles):
        raise OpError("contract", "ray_wait: handles must be a list of strings")
    timeout_ms = payload.get("timeout_ms", 0)
    if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int):
        raise OpError("contract", "ray_wait: timeout_ms must be a whole number")
    deadline = time.monotonic() + min(max(timeout_ms, 0), MAX_WAIT_MS) / 1000
    done: list[dict] = []
    with _lock:
        run = _runs.get(run_id)
        for handle in handles:
            if handle not in _refs:
                error = OpError("contract", f"no Ray trial has the handle {handle}")
                done.append({"handle": handle, "error": error.to_dict()})
    if run is None:
        raise OpError("contract", f"run {run_id} was not started on Ray (ray_start_run)")
    while True:
        try:
            if done:
                handle, future = run.ended.get_nowait()
            else:
                handle, future = run.ended.get(timeout=max(deadline - time.monotonic(), 0))
        except queue.Empty:
            return {"done": done}
        with _lock:
            if _refs.pop(handle, None) is None:
                continue  # cancelled meanwhile
        try:
            done.append({"handle": handle, **_outcome(ray, future)})
        except OpError as err:
            done.append({"handle": handle, "error": err.to_dict()})


def _outcome(ray: Any, future: Future) -> dict:
    """The report and placement of an ended task, or the ``OpError`` of its failure."""
    try:
        outcome = future.result()
    except ray.exceptions.TaskCancelledError as exc:
        raise OpError("cancelled", f"the Ray task was cancelled: {exc}") from None
    except (
        ray.exceptions.WorkerCrashedError,
        ray.exceptions.NodeDiedError,
        ray.exceptions.LocalRayletDiedError,
        ray.exceptions.ObjectLostError,
        ray.exceptions.OutOfMemoryError,
    ) as exc:
        raise OpError(
            "subprocess_exit",
            f"the Ray worker running the trial died: {type(exc).__name__}: {exc}",
        ) from None
    except ray.exceptions.RayError as exc:
        raise OpError(
            "system_error", f"Ray failed the trial: {type(exc).__name__}: {exc}"
        ) from None
    if "error" in outcome:
        error = outcome["error"]  # an OpError's to_dict(), from the task
        error_class = error["class"]
        raise OpError(error_class, error["message"], error.get("details"))
    return {"report": outcome["report"], "placement": outcome["placement"]}


#: Handles cancelled before they were submitted (the host cancels what it awaits, and a
#: submission may still be on its way here), so that submission is refused: oldest first.
_cancelled_early: dict[str, None] = {}
#: How many such handles are remembered (one per trial in flight is plenty).
_CANCELLED_EARLY_MAX = 4096


def _remember_cancelled(handle: str) -> None:
    """Called under ``_lock``."""
    _cancelled_early[handle] = None
    while len(_cancelled_early) > _CANCELLED_EARLY_MAX:
        del _cancelled_early[next(iter(_cancelled_early))]


def cancel(payload: Mapping[str, Any]) -> dict:
    """Force-cancel the trials ``handles`` (their worker processes are killed); a handle
    not submitted yet is remembered, and its submission, when it comes, refused."""
    ray = _ray()
    handles = payload.get("handles") or []
    cancelled = 0
    for handle in handles:
        with _lock:
            ref = _refs.pop(str(handle), None)
            if ref is None:
                _remember_cancelled(str(handle))
        if ref is not None:
            try:
                ray.cancel(ref, force=True)
            except Exception:  # already finished, or its owner is gone
                continue
            cancelled += 1
    return {"cancelled": cancelled}


#: In a Ray worker: the dataset of each (dataset id, options, seed), with the id of the
#: object it was fetched from (a new run shares a new object, fetched again).
_fetched: dict[str, tuple[str, Any]] = {}
#: How many runs' datasets a worker keeps (fewer than ``datasets`` keeps provided).
_FETCHED_RUNS = 4


def _placement(ray: Any) -> dict:
    """Where this worker process runs (its node id, host name and pid never change)."""
    global _worker_placement
    if _worker_placement is None:
        _worker_placement = {
            "node_id": ray.get_runtime_context().get_node_id(),
            "host": socket.gethostname(),
            "worker_pid": os.getpid(),
        }
    return dict(_worker_placement)


def _run_trial_task(module: str, trial: dict, dataset_key: tuple, shared: list) -> dict:
    """The remote task: run the service's ``run_trial`` on this node, with the dataset
    the driver shared (``shared``: its ObjectRef, fetched once per run by each worker).
    Failures come back as values (an ``OpError`` does not pickle)."""
    import ray

    from . import datasets

    dataset_id, options, seed = dataset_key
    (dataset_ref,) = shared
    key = repr(dataset_key)
    fetched = _fetched.get(key)
    if fetched is None or fetched[0] != dataset_ref.hex():
        # Provided once per fetch: datasets keeps more provided datasets than _fetched.
        fetched = (dataset_ref.hex(), ray.get(dataset_ref))
        datasets.provide_dataset(dataset_id, options, seed, fetched[1])
        _fetched.pop(key, None)
        _fetched[key] = fetched
        while len(_fetched) > _FETCHED_RUNS:
            _fetched.pop(next(iter(_fetched)))
    placement = _placement(ray)
    try:
        service = importlib.import_module(module)
        report = service.run_trial(trial)
    except OpError as err:
        return {"error": err.to_dict(), "placement": placement}
    except Exception as exc:
        return {"error": exception_error("run_trial", exc).to_dict(), "placement": placement}
    return {"report": report, "placement": placement}
