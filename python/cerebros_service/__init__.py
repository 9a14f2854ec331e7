"""cerebros_service: the Python service driven by the cerebros-bridge Rust host.

Op rules (the same for this module and for any user module the bridge is pointed at, in
every mode; ``cerebros_service._dispatch`` is their one implementation):

* an op is a **function defined in the service module** (its ``__module__`` is the module,
  or a submodule of the package), plain or ``async def`` (an ``async def`` op is awaited),
  or a callable the module lists by name in ``__bridge_ops__``;
* imported functions, builtins, classes, modules, ``functools.partial`` objects, callable
  instances and names starting with ``_`` are **never ops** (unless listed, for all but
  ``_`` names);
* an op takes **one dict** (the payload) and returns **one dict** (the result), made of
  JSON-like values: ``None``, ``bool``, ``int`` within 64 bits, finite ``float``, ``str``,
  lists and dicts with string keys, nested at most 256 levels.

Consequently every public function defined here (or imported from a submodule) is an op:
helpers are imported or defined under ``_`` names. The module stays cheap to import; heavy
packages (numpy, scikit-learn, MLflow) are imported only inside the ops that need them.
"""

import platform as _platform
import sys as _sys

from . import _blas
from ._dispatch import OpError as _OpError  # noqa: F401  (re-exported for Python callers)
from ._dispatch import resolve_op as _resolve_op  # noqa: F401

_blas.size_pools_before_numpy_loads()  # before any op loads numpy: see _blas

__version__ = "0.1.0"
SERVICE_VERSION = __version__

# distribution name on the package index -> key in the ``health`` report
_REPORTED_PACKAGES = {
    "numpy": "numpy",
    "scikit-learn": "sklearn",
    "mlflow": "mlflow",
    "keras": "keras",
    "jax": "jax",
}


def _package_version(distribution: str) -> str | None:
    # Imported here: importlib.metadata costs ~50 ms, which every subprocess-mode call
    # would pay at start-up if the module imported it.
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def health(payload: dict) -> dict:
    """Report the interpreter and package versions; imports none of the heavy packages.

    ``devices``: what the Keras trainer computes on (``["cpu:0"]``, ``["gpu:0"]``), present
    once keras is imported in this process (a ``keras`` run started), or when the payload
    asks with ``{"devices": true}`` and keras is installed (importing it takes seconds).
    """
    report = {
        "status": "ok",
        "service": "cerebros_service",
        "service_version": SERVICE_VERSION,
        "python_version": _platform.python_version(),
        "implementation": _platform.python_implementation(),
        "executable": _sys.executable,
        "prefix": _sys.prefix,
        "packages": {key: _package_version(dist) for dist, key in _REPORTED_PACKAGES.items()},
    }
    devices = _keras_devices(payload.get("devices") is True)
    if devices is not None:
        report["devices"] = devices
    return report


def _keras_devices(load: bool) -> list[str] | None:
    """The Keras backend's devices; ``None`` when keras is not imported and either ``load``
    is false or keras is not installed."""
    if "keras" not in _sys.modules:
        from importlib.util import find_spec

        if not load or find_spec("keras") is None:
            return None
    from .nas import keras_trainer

    keras_trainer.require_keras()
    return keras_trainer.devices()


def echo(payload: dict) -> dict:
    """Return the payload itself (a shallow copy), for cheap and exact round trips."""
    return dict(payload)


# -- NAS ops (bodies in the ``nas`` subpackage, imported on first use: it pulls in numpy) --


def start_run(payload: dict) -> dict:
    """Check a ``RunStartedV1`` (dataset, search space, objective, budget); start the run."""
    from .nas import ops

    return ops.start_run(payload)


def run_trial(payload: dict) -> dict:
    """Sample, train and save one architecture of a ``TrialRequestedV1``; a ``TrialReportedV1``."""
    from .nas import ops

    return ops.run_trial(payload)


def record_trial(payload: dict) -> dict:
    """Validate a ``TrialReportedV1`` and acknowledge it (``recorded: true``)."""
    from .nas import ops

    return ops.record_trial(payload)


def finalize_run(payload: dict) -> dict:
    """Validate a ``RunFinalizedV1`` and acknowledge it (``finalized: true``)."""
    from .nas import ops

    return ops.finalize_run(payload)


# -- the ray executor (DESIGN §12; bodies in nas.ray_executor, which imports ray lazily) --


def ray_connect(payload: dict) -> dict:
    """``ray.init`` once per process (``address``, ``namespace``, ``python_paths``); the Ray
    version and the cluster's live nodes. An unreachable cluster is a ``config`` error."""
    from .nas import ray_executor

    return ray_executor.connect(payload)


def ray_start_run(payload: dict) -> dict:
    """Connect and share the run's dataset through the object store (once per run)."""
    from .nas import ray_executor

    return ray_executor.start_run(payload)


def ray_submit(payload: dict) -> dict:
    """Submit one trial (``trial``: a ``TrialRequestedV1``) as a Ray task under the caller's
    ``handle``; returns ``{"handle"}`` at once."""
    from .nas import ray_executor

    return ray_executor.submit(payload)


def ray_wait(payload: dict) -> dict:
    """Wait at most ``timeout_ms`` for any trial of the run ``run_id`` to end; every ended
    one's report and node, or its error (one call for all trials in flight; ``handles``
    the caller awaits that this process does not know end with a ``contract`` error)."""
    from .nas import ray_executor

    return ray_executor.wait(payload)


def ray_cancel(payload: dict) -> dict:
    """Force-cancel submitted trials (``handles``): their worker processes are killed."""
    from .nas import ray_executor

    return ray_executor.cancel(payload)


def ray_end_run(payload: dict) -> dict:
    """Release the run's shared dataset."""
    from .nas import ray_executor

    return ray_executor.end_run(payload)


def ray_disconnect(payload: dict) -> dict:
    """``ray.shutdown()`` of this process's Ray driver, before the host exits."""
    from .nas import ray_executor

    return ray_executor.disconnect(payload)


def sync_mlflow(payload: dict) -> dict:
    """Mirror a stored run (parent MLflow run) and optionally one trial (nested child run)
    into MLflow at ``tracking_uri``; idempotent. Returns the MLflow run ids."""
    from . import mlflow_sync

    return mlflow_sync.sync(payload)
