"""MLflow sync: mirror one stored NAS run (and optionally one of its trials) into MLflow.

MLflow is a *view* of the bridge's store, never its source of truth: the Rust host reads
an outbox item, builds the payload from what the store holds, and calls the
``sync_mlflow`` op, which lands here. One call:

1. finds (or creates) the run's experiment, named after the run spec;
2. finds (or creates) the run's **parent** MLflow run, looked up by the tag
   ``cerebros.run_id`` (or by the MLflow id the store already knows), with the spec as
   params; when ``final`` is true it also logs the run's summary metrics, its final status
   tag and terminates the MLflow run;
3. when a ``trial`` is given, finds (or creates) its **child** run, nested under the parent
   (tag ``mlflow.parentRunId``) and looked up by ``cerebros.trial_id``, with the
   architecture as params, the scalar metrics, the per-epoch curves of ``metrics.curve`` as
   steps of ``curve/<name>``, the trial's artifact file, and its end status.

Every step is idempotent: a retried call finds what an earlier (possibly interrupted) call
created and adds only what is missing, and a run already marked complete for its status
(tag ``cerebros.synced``) is returned untouched. A tracking server that cannot be reached
is reported as ``OpError("system_error", ..., {"unreachable": True})`` so the host can tell
an outage from a bad item; a request MLflow refuses whatever the state of the server
(``INVALID_PARAMETER_VALUE``, ``BAD_REQUEST``, ``MALFORMED_REQUEST``) as
``OpError("exception", ..., {"permanent": True})``: that item can never sync as it is.

MLflow creates (and migrates) a sqlite tracking database the first time a process opens
it, and two processes doing that at once break it; the first opening in each process
holds an OS lock on ``<database>.lock`` beside the file, so they take turns.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from ._dispatch import OpError

__all__ = ["sync"]

#: Tags the lookups rely on.
RUN_TAG = "cerebros.run_id"
TRIAL_TAG = "cerebros.trial_id"
#: Set last, to the status that was fully synced: a retried sync of that status is a no-op.
SYNCED_TAG = "cerebros.synced"
PARENT_TAG = "mlflow.parentRunId"

#: MLflow's HTTP client settings applied (unless already set in the environment) before
#: the first call: the host retries with its own backoff, so one try per request and a
#: short timeout keep a dead server from hanging the op.
_HTTP_ENV = {
    "max_retries": "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "timeout_s": "MLFLOW_HTTP_REQUEST_TIMEOUT",
    "backoff_factor": "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    "backoff_jitter": "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER",
}
_HTTP_DEFAULTS = {"max_retries": 0, "timeout_s": 5, "backoff_factor": 0, "backoff_jitter": 0}

#: MLflow's end status of each trial or run status (a pruned trial was stopped on purpose).
_RUN_STATUS = {
    "succeeded": "FINISHED",
    "failed": "FAILED",
    "cancelled": "KILLED",
    "pruned": "KILLED",
}
_MAX_PARAM = 6000  # mlflow.utils.validation.MAX_PARAM_VAL_LENGTH
_MAX_TAG = 8000  # MAX_TAG_VAL_LENGTH
_BATCH_METRICS = 1000  # MAX_METRICS_PER_BATCH
_BATCH_PARAMS_TAGS = 100  # MAX_PARAMS_TAGS_PER_BATCH
#: MLflow error codes of a request refused for what it holds: retrying it never helps.
_REFUSED = frozenset({"INVALID_PARAMETER_VALUE", "BAD_REQUEST", "MALFORMED_REQUEST"})

_setup_lock = threading.Lock()
_configured = False
_clients: dict[str, Any] = {}


def sync(payload: Mapping[str, Any]) -> dict:
    """Run one sync (see the module docstring); returns the MLflow ids.

    Payload: ``tracking_uri`` (required), ``run`` (the stored run: ``run_id``, ``name``,
    ``status``, ``spec``, ``best_metric``, ... and the known ``mlflow_run_id``), ``final``
    (bool: the run has ended), ``trial`` (optional: the stored trial; its file is
    ``artifact_path`` or the ``file://`` ``artifact_uri``), ``experiment_name`` (default:
    the spec's name), ``http`` (``timeout_s``, ``max_retries``). Result:
    ``{"experiment_id", "run": {"mlflow_run_id", "created"},
    "trial": {"mlflow_run_id", "created"} | None}``.

    With ``probe: true`` (and no ``run``) it only checks that MLflow imports and the
    tracking URI answers, writing nothing: ``{"ok", "mlflow_version", "detail"}``.
    """
    uri = payload.get("tracking_uri")
    if not isinstance(uri, str) or not uri:
        raise OpError(
            "contract", "tracking_uri: a non-empty string is required", {"key": "tracking_uri"}
        )
    _configure(payload.get("http") or {})
    if payload.get("probe"):
        return _probe(uri)
    run = payload.get("run")
    if not isinstance(run, Mapping) or not isinstance(run.get("run_id"), str):
        raise OpError("contract", "run: an object with a run_id is required", {"key": "run"})
    trial = payload.get("trial")
    if trial is not None and (
        not isinstance(trial, Mapping) or not isinstance(trial.get("trial_id"), str)
    ):
        raise OpError("contract", "trial: an object with a trial_id is required", {"key": "trial"})
    try:
        client = _client(uri)
        experiment_id = _experiment(client, uri, payload.get("experiment_name") or _spec_name(run))
    except Exception as exc:
        # Nothing item-specific has happened yet: whatever failed fails for every item.
        raise _classify(exc, uri, server_wide=True) from exc
    try:
        parent_id, parent_created = _parent(client, experiment_id, run, bool(payload.get("final")))
        child = None
        if trial is not None:
            root = payload.get("artifact_root")
            child_id, child_created = _child(client, experiment_id, parent_id, run, trial, root)
            child = {"mlflow_run_id": child_id, "created": child_created}
    except OpError:
        raise
    except Exception as exc:
        raise _classify(exc, uri) from exc
    return {
        "experiment_id": experiment_id,
        "run": {"mlflow_run_id": parent_id, "created": parent_created},
        "trial": child,
    }


# -- set-up ------------------------------------------------------------------------------


def _configure(http: Mapping[str, Any]) -> None:
    """Apply the HTTP settings (once per process; variables the user set are kept), keep
    MLflow off stdout and quiet its INFO logging of database migrations."""
    global _configured
    with _setup_lock:
        if _configured:
            return
        for key, name in _HTTP_ENV.items():
            value = http.get(key, _HTTP_DEFAULTS[key])
            os.environ.setdefault(name, str(int(value)))
        # MLflow prints "View run ... at: URL" on stdout when a run on a server ends; stdout
        # belongs to the host (the CLI's JSON, the subprocess mode's result).
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
        import logging

        for name in ("mlflow.store.db.utils", "mlflow.store.sqlalchemy_store", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
        _configured = True


def _client(uri: str):
    client = _clients.get(uri)
    if client is None:
        from mlflow import MlflowClient

        # Opening the store creates and migrates a new database: one process at a time.
        with _creation_lock(uri):
            client = MlflowClient(tracking_uri=uri)
        _clients[uri] = client
    return client


@contextmanager
def _creation_lock(uri: str) -> Iterator[None]:
    """Holds an exclusive OS lock on ``<database>.lock`` beside a sqlite tracking database
    (nothing for other URIs); the OS releases it if the process dies. The file stays."""
    path = _sqlite_path(uri)
    if path is None:
        yield
        return
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _artifact_location(uri: str) -> str | None:
    """Artifacts of a local sqlite tracking store go to ``mlartifacts/`` beside the
    database; a server decides for itself (``None``)."""
    path = _sqlite_path(uri)
    if path is None:
        return None
    return (path.parent / "mlartifacts").resolve().as_uri()


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` URI (``None`` for other URIs and for
    an in-memory database)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = unquote(uri[len("sqlite:///") :].split("?")[0])
    if path in ("", ":memory:"):
        return None
    return Path(path)


def _experiment(client, uri: str, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=_artifact_location(uri))
    except Exception:
        found = client.get_experiment_by_name(name)  # created meanwhile by another syncer
        if found is None:
            raise
        return found.experiment_id


# -- the parent run ----------------------------------------------------------------------


def _parent(client, experiment_id: str, run: Mapping[str, Any], final: bool) -> tuple[str, bool]:
    run_id = run["run_id"]
    status = str(run.get("status") or "running")
    existing = _known(client, run.get("mlflow_run_id"), RUN_TAG, run_id) or _find(
        client, experiment_id, RUN_TAG, run_id
    )
    if existing is not None and final and existing.data.tags.get(SYNCED_TAG) == status:
        return existing.info.run_id, False
    created = existing is None
    if created:
        correlation = (run.get("start_info") or {}).get("correlation_id") or run_id
        tags = {
            RUN_TAG: run_id,
            "run_id": run_id,
            "correlation_id": str(correlation),
            "cerebros.kind": "run",
            "status": "running",
            "objective": str(run.get("objective", "")),
            "dataset": str(run.get("dataset_id", "")),
        }
        existing = client.create_run(
            experiment_id,
            start_time=_ms(run.get("started_at")) or _ms(run.get("created_at")),
            tags=tags,
            run_name=str(run.get("name") or run_id),
        )
    mlflow_id = existing.info.run_id
    present = existing.data.params
    params = {k: v for k, v in _flatten(run.get("spec") or {}).items() if k not in present}
    _log(client, mlflow_id, params=params)
    if final:
        stamp = _stamp(run.get("finished_at"))
        metrics = {
            "trials_completed": run.get("trials_completed"),
            "trials_planned": run.get("trials_planned"),
        }
        objective = run.get("objective")
        if objective:
            metrics[f"best_{objective}"] = run.get("best_metric")
        tags = {"status": status}
        if run.get("best_trial_id"):
            tags["best_trial_id"] = str(run["best_trial_id"])
        if run.get("error"):
            tags["error"] = str(run["error"])
        _log(
            client,
            mlflow_id,
            metrics=_scalar_metrics(metrics, stamp, existing.data.metrics),
            tags=tags,
        )
        client.set_terminated(mlflow_id, _RUN_STATUS.get(status, "FAILED"), end_time=stamp)
        client.set_tag(mlflow_id, SYNCED_TAG, status)
    return mlflow_id, created


# -- the child run of a trial ------------------------------------------------------------


def _child(
    client,
    experiment_id: str,
    parent_id: str,
    run: Mapping[str, Any],
    trial: Mapping[str, Any],
    artifact_root: Any = None,
) -> tuple[str, bool]:
    trial_id = trial["trial_id"]
    status = str(trial.get("status") or "failed")
    existing = _known(client, trial.get("mlflow_run_id"), TRIAL_TAG, trial_id) or _find(
        client, experiment_id, TRIAL_TAG, trial_id
    )
    if existing is not None and existing.data.tags.get(SYNCED_TAG) == status:
        return existing.info.run_id, False
    created = existing is None
    if created:
        tags = {
            TRIAL_TAG: trial_id,
            RUN_TAG: run["run_id"],
            PARENT_TAG: parent_id,
            "trial_id": trial_id,
            "run_id": run["run_id"],
            "cerebros.kind": "trial",
            "index": str(trial.get("index", "")),
        }
        existing = client.create_run(
            experiment_id,
            start_time=_ms(trial.get("started_at")) or _ms(trial.get("finished_at")),
            tags=tags,
            run_name=f"trial {trial.get('index', trial_id)}",
        )
    mlflow_id = existing.info.run_id
    stamp = _stamp(trial.get("finished_at"), trial.get("started_at"))
    params = {"index": trial.get("index"), "seed": trial.get("seed")}
    params.update(_flatten(trial.get("parameters") or {}))
    params = {k: v for k, v in params.items() if k not in existing.data.params and v != ""}
    raw = dict(trial.get("metrics") or {})
    curves = raw.pop("curve", None)
    present = existing.data.metrics
    metrics = _scalar_metrics(raw, stamp, present)
    metrics += _curve_metrics(curves, stamp, present)
    tags = {"status": status}
    tags.update(_placement_tags(trial.get("placement")))
    if trial.get("error") is not None:
        error = trial["error"]
        message = error.get("message") if isinstance(error, Mapping) else None
        tags["error"] = str(message or json.dumps(error))
    artifact = trial.get("artifact_path") or _local_path(trial.get("artifact_uri"))
    if artifact:
        refused = _outside(artifact, artifact_root)
        if refused:
            tags["cerebros.artifact_refused"] = refused
        elif Path(artifact).is_file():
            client.log_artifact(mlflow_id, artifact)
            tags["artifact"] = Path(artifact).name
        else:
            tags["cerebros.artifact_missing"] = str(artifact)
    _log(client, mlflow_id, metrics=metrics, params=params, tags=tags)
    client.set_terminated(mlflow_id, _RUN_STATUS.get(status, "FAILED"), end_time=stamp)
    client.set_tag(mlflow_id, SYNCED_TAG, status)
    return mlflow_id, created


# -- helpers -----------------------------------------------------------------------------


def _placement_tags(placement: Any) -> dict[str, str]:
    """Where the trial ran under the ray executor (DESIGN §12): ``cerebros.node_id``,
    ``cerebros.node_host`` and ``cerebros.worker_pid``; none under the local executor."""
    if not isinstance(placement, Mapping):
        return {}
    return {
        f"cerebros.{tag}": str(placement[key])
        for tag, key in (
            ("node_id", "node_id"),
            ("node_host", "host"),
            ("worker_pid", "worker_pid"),
        )
        if placement.get(key) is not None
    }


def _known(client, mlflow_id: Any, tag: str, value: str):
    """The run the store already knows, if MLflow still has it (active, same tag)."""
    if not isinstance(mlflow_id, str) or not mlflow_id:
        return None
    try:
        found = client.get_run(mlflow_id)
    except Exception as exc:
        if _unreachable(exc):
            raise
        return None  # deleted, or another tracking store: look it up by tag
    if found.info.lifecycle_stage != "active" or found.data.tags.get(tag) != value:
        return None
    return found


def _find(client, experiment_id: str, tag: str, value: str):
    quoted = value.replace("\\", "\\\\").replace("'", "\\'")
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{tag}` = '{quoted}'",
        max_results=10,
        order_by=["attributes.start_time ASC"],
    )
    return runs[0] if runs else None


def _log(client, run_id: str, metrics=(), params=None, tags=None) -> None:
    """``log_batch`` in chunks that respect MLflow's per-request limits."""
    from mlflow.entities import Param, RunTag

    metrics = list(metrics)
    params = [Param(k, v) for k, v in (params or {}).items()]
    tags = [RunTag(k, _clip(v, _MAX_TAG)) for k, v in (tags or {}).items()]
    while metrics or params or tags:
        chunk_params = params[:_BATCH_PARAMS_TAGS]
        params = params[_BATCH_PARAMS_TAGS:]
        chunk_tags = tags[: _BATCH_PARAMS_TAGS - len(chunk_params)]
        tags = tags[len(chunk_tags) :]
        room = _BATCH_METRICS - len(chunk_params) - len(chunk_tags)
        chunk_metrics = metrics[:room]
        metrics = metrics[room:]
        client.log_batch(
            run_id, metrics=chunk_metrics, params=chunk_params, tags=chunk_tags, synchronous=True
        )


def _scalar_metrics(values: Mapping[str, Any], stamp: int, present: Mapping[str, Any]) -> list:
    from mlflow.entities import Metric

    out = []
    for key, value in values.items():
        number = _number(value)
        if number is not None and key not in present:
            out.append(Metric(key, number, stamp, 0))
    return out


def _curve_metrics(curves: Any, stamp: int, present: Mapping[str, Any]) -> list:
    """Per-epoch curves as steps 1..n of ``curve/<name>`` (epochs count from 1)."""
    from mlflow.entities import Metric

    out = []
    if not isinstance(curves, Mapping):
        return out
    for name, values in curves.items():
        key = f"curve/{name}"
        if key in present or not isinstance(values, list):
            continue
        for epoch, value in enumerate(values, start=1):
            number = _number(value)
            if number is not None:
                out.append(Metric(key, number, stamp, epoch))
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested tables become dotted keys; lists and other values become (clipped) text."""
    out: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{name}."))
        elif value is None:
            continue
        elif isinstance(value, str):
            out[name] = _clip(value, _MAX_PARAM)
        else:
            out[name] = _clip(json.dumps(value, separators=(",", ":")), _MAX_PARAM)
    return out


def _clip(text: Any, limit: int) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _outside(artifact: str, root: Any) -> str | None:
    """Why ``artifact`` may not be uploaded, or ``None`` when its real path (symlinks
    resolved) lies inside the run's artifacts folder ``root`` (DESIGN §10). Checked right
    before the upload: the file may have changed since the host accepted it."""
    if not isinstance(root, str) or not root:
        return "no artifacts folder was given to check it against"
    real, folder = os.path.realpath(artifact), os.path.realpath(root)
    if os.path.commonpath([real, folder]) != folder:
        return f"{real} is outside the run's artifacts folder {folder}"
    return None


def _local_path(uri: Any) -> str | None:
    """The file of a ``file://`` URI (``None`` for anything else)."""
    if not isinstance(uri, str) or not uri.startswith("file://"):
        return None
    return unquote(urlparse(uri).path) or None


def _probe(uri: str) -> dict:
    """Whether MLflow imports and ``uri`` answers, writing nothing: a sqlite database that
    does not exist yet is reported, not created."""
    try:
        import mlflow
    except ImportError as exc:
        raise _classify(exc, uri) from exc
    found = {"ok": True, "mlflow_version": mlflow.__version__, "tracking_uri": uri}
    path = _sqlite_path(uri)
    if path is not None:
        if not path.exists():
            folder = path.parent
            if not folder.is_dir():
                raise OpError(
                    "config", f"{uri}: folder {folder} does not exist", {"tracking_uri": uri}
                )
            return {**found, "detail": f"{path} will be created at the first sync"}
    try:
        _client(uri).search_experiments(max_results=1)
    except Exception as exc:
        raise _classify(exc, uri) from exc
    return {**found, "detail": "answers"}


def _spec_name(run: Mapping[str, Any]) -> str:
    spec = run.get("spec") if isinstance(run.get("spec"), Mapping) else {}
    return str(run.get("name") or spec.get("name") or "cerebros")


def _stamp(*stamps: Any) -> int:
    """The first readable time of ``stamps`` in milliseconds, else now: MLflow refuses a
    metric without a timestamp."""
    for stamp in stamps:
        ms = _ms(stamp)
        if ms is not None:
            return ms
    return int(time.time() * 1000)


def _ms(stamp: Any) -> int | None:
    """Milliseconds since the epoch of an RFC 3339 time (``None`` when absent or unreadable)."""
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what caused it (at most 10 links)."""
    current: BaseException | None = exc
    for _ in range(10):
        if current is None:
            return
        yield current
        current = current.__cause__ or current.__context__


def _unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a network failure or a transient server or
    database error, rather than a problem with this item."""
    network: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)
    try:
        import requests

        network += (requests.exceptions.RequestException,)
    except ImportError:
        pass
    for current in _chain(exc):
        if isinstance(current, network):
            return True
        code = getattr(current, "error_code", None)
        if code in ("TEMPORARILY_UNAVAILABLE", "INTERNAL_ERROR", "REQUEST_LIMIT_EXCEEDED"):
            return True
        text = str(current)
        if "Max retries exceeded" in text or "database is locked" in text:
            return True
    return False


def _refused(exc: BaseException) -> str | None:
    """The MLflow error code when MLflow refused the request for what it holds (see
    ``_REFUSED``), else ``None``."""
    for current in _chain(exc):
        code = getattr(current, "error_code", None)
        if code in _REFUSED:
            return code
    return None


def _reason(exc: BaseException) -> str:
    """A short reason for a failed request (``[Errno 111] Connection refused``, ...)."""
    text = str(exc)
    found = re.search(r"\[Errno -?\d+\] [^\"')\]]+", text)
    if found:
        return found.group(0).strip()
    if "timed out" in text.lower():
        return "timed out"
    return text if len(text) <= 200 else text[:197] + "..."


def _classify(exc: Exception, uri: str, server_wide: bool = False) -> OpError:
    """The ``OpError`` of a failed sync: ``dependency`` when MLflow is missing,
    ``system_error`` when the tracking store cannot be reached or fails whatever the item
    (``server_wide``), ``exception`` for a failure of this item (marked ``permanent`` when
    MLflow refused the request itself, even before any item-specific step: the experiment
    is named by the run's spec, so a name MLflow refuses is this item's)."""
    kind = type(exc)
    name = f"{kind.__module__}.{kind.__qualname__}"
    details = {"type": name, "tracking_uri": uri}
    if isinstance(exc, ImportError):
        return OpError(
            "dependency",
            f"mlflow cannot be imported ({exc}); install it into the venv (pip install mlflow)",
            details,
        )
    if _unreachable(exc):
        details["unreachable"] = True
        details["cause"] = str(exc)
        return OpError("system_error", f"MLflow at {uri} is unreachable: {_reason(exc)}", details)
    code = _refused(exc)
    if code is not None:  # the request's own content (an experiment named by this run, too)
        details["permanent"] = True
        details["error_code"] = code
        return OpError("exception", f"MLflow refused this item ({code}): {_reason(exc)}", details)
    if server_wide:
        return OpError("system_error", f"MLflow at {uri} failed: {_reason(exc)}", details)
    return OpError("exception", f"{name}: {exc}", details)
