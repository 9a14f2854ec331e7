"""Trial artifacts: ``<artifact_dir>/<run_id>/<trial_id>.npz`` (the numpy trainer's;
the Keras trainer's ``.keras`` files are described in :mod:`.keras_trainer`), written
atomically.

An ``.npz`` artifact holds the trained weights, one array per stage (``stage{i}_weight``,
``stage{i}_bias``, ``stage{i}_mask`` when the stage is sparse) and for the output layer
(``output_weight``, ``output_bias``), the input scaling (``x_mean``, ``x_std``) and a JSON
string ``meta`` (0-d text array) with the architecture, the compiled layout, the dataset
summary, the class labels, the target scaling and the trial's metrics. It loads with
``numpy.load(path, allow_pickle=False)``; :func:`load_artifact` rebuilds the network.

The file is serialised in memory, hashed (SHA-256), written to a temporary file in the same
directory, flushed to disk and renamed into place, so readers never see a partial file.
Any ``OSError`` (full disk, unwritable directory) becomes ``OpError("system_error", ...)``
naming the path.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .._dispatch import OpError
from .network import Network
from .search_space import Architecture

__all__ = [
    "artifact_path",
    "ensure_dir",
    "load_artifact",
    "safe_name",
    "save_artifact",
    "write_atomically",
]

_SAFE = re.compile(r"[A-Za-z0-9._-]+")


def safe_name(identifier: str) -> str:
    """``identifier`` as one safe file-name component.

    Ids made of letters, digits, ``.``, ``_`` and ``-`` (and not ``.``/``..``) are kept as
    they are; any other id has its other characters replaced by ``_`` and a short hash of the
    original appended, so two ids never share a file.
    """
    if _SAFE.fullmatch(identifier) and identifier not in (".", ".."):
        return identifier
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", identifier).strip(".")[:80] or "id"
    digest = hashlib.sha256(identifier.encode()).hexdigest()[:8]
    return f"{cleaned}-{digest}"


def artifact_root(artifact_dir: str | None) -> Path:
    """The absolute artifact directory (default ``./artifacts``)."""
    return Path(os.path.abspath(os.path.expanduser(artifact_dir or "artifacts")))


def artifact_path(
    artifact_dir: str | None, run_id: str, trial_id: str, suffix: str = ".npz"
) -> Path:
    """``<artifact_dir>/<run_id>/<trial_id><suffix>`` (ids made safe), absolute."""
    return artifact_root(artifact_dir) / safe_name(run_id) / f"{safe_name(trial_id)}{suffix}"


def _system_error(action: str, path: Path, exc: OSError) -> OpError:
    reason = exc.strerror or str(exc)
    return OpError(
        "system_error",
        f"cannot {action} {path}: {reason}",
        {"path": str(path), "errno": exc.errno, "reason": reason},
    )


def ensure_dir(path: Path) -> None:
    """Create ``path`` (and parents) and check it is a writable directory."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as exc:
        raise _system_error("create the artifact directory", path, exc) from exc


def save_artifact(
    path: Path, net: Network, meta: dict[str, Any], arrays: dict[str, np.ndarray]
) -> tuple[str, int]:
    """Write the network's weights, ``arrays`` and ``meta`` to ``path``; return (sha256, bytes)."""
    content: dict[str, np.ndarray] = {}
    for i, stage in enumerate(net.stages):
        content[f"stage{i}_weight"] = stage.weight
        content[f"stage{i}_bias"] = stage.bias
        if stage.mask is not None:
            content[f"stage{i}_mask"] = stage.mask.astype(np.uint8)
    content["output_weight"] = net.out_weight
    content["output_bias"] = net.out_bias
    content.update(arrays)
    content["meta"] = np.array(json.dumps(meta, sort_keys=True))
    memory = io.BytesIO()
    np.savez(memory, **content)
    return write_atomically(path, memory.getvalue())


def write_atomically(path: Path, blob: bytes) -> tuple[str, int]:
    """Write ``blob`` to ``path`` atomically (temporary file, fsync, rename); return
    (sha256, bytes)."""
    digest = hashlib.sha256(blob).hexdigest()
    ensure_dir(path.parent)
    tmp_name: str | None = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            handle.write(blob)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
        tmp_name = None
        _fsync_dir(path.parent)
    except OSError as exc:
        raise _system_error("write the artifact", path, exc) from exc
    finally:
        if tmp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
    return digest, len(blob)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def load_artifact(path: str | Path) -> tuple[Network, dict[str, Any], dict[str, np.ndarray]]:
    """Load an artifact: (the rebuilt network with its weights, meta, the other arrays)."""
    path = Path(str(path).removeprefix("file://"))
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    meta = json.loads(str(arrays.pop("meta")))
    arch = Architecture.from_dict(meta["architecture"])
    layout = meta["layout"]
    net = Network(arch, layout["n_inputs"], layout["n_outputs"], meta["task"])
    for i, stage in enumerate(net.stages):
        stage.weight[...] = arrays.pop(f"stage{i}_weight")
        stage.bias[...] = arrays.pop(f"stage{i}_bias")
        arrays.pop(f"stage{i}_mask", None)
    net.out_weight[...] = arrays.pop("output_weight")
    net.out_bias[...] = arrays.pop("output_bias")
    return net, meta, arrays
