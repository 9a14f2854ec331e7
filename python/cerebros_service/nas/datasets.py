"""Datasets: scikit-learn's shipped sets and user ``csv``/``npz`` files, split and scaled.

Dataset ids:

* ``sklearn:digits|wine|breast_cancer|iris|diabetes`` — the loaders scikit-learn ships (the
  data is in the package, nothing is downloaded);
* ``synthetic:classification|regression`` — rows drawn by scikit-learn's generators from
  the run seed (options in :mod:`.synthetic`);
* ``csv:PATH`` — a header row, numeric feature columns, the target in column ``target`` or
  ``dataset_options.target`` (numbers, or labels of any text for classification);
* ``npz:PATH`` — arrays ``X`` (2-D, numeric) and ``y`` (1-D), loaded without pickle.

``dataset_options``: ``validation_split`` (default 0.2, in (0, 1)), ``target`` (csv only),
``task`` (``classification``/``regression``; inferred when absent for files: a text target
or one of at most 100 integral values is classification), and the generators' ``samples``,
``features``, ``informative``, ``classes`` and ``noise`` (synthetic datasets only).

The validation split is seeded by the run seed and stratified for classification; inputs are
standardised with the training split's mean and standard deviation, and regression targets
too (``y_mean``/``y_std`` undo it). Loaded datasets are cached per process, keyed by id,
options, seed and, for files, the file's size and modification time.
"""

from __future__ import annotations

import csv
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._dispatch import OpError
from .checks import contract_error
from .rules import SKLEARN_TASKS, check_section
from .search_space import seeded_rng
from .synthetic import SYNTHETIC_DEFAULTS, SYNTHETIC_OPTIONS, check_synthetic_options, generate

__all__ = [
    "SKLEARN_DATASETS",
    "Dataset",
    "load_dataset",
    "normalize_dataset_options",
    "clear_cache",
    "provide_dataset",
]

#: scikit-learn loader name and task of each ``sklearn:`` id (the ids and tasks are those of
#: ``spec_rules.json``).
SKLEARN_DATASETS: dict[str, tuple[str, str]] = {
    name: (f"load_{name}", task) for name, task in SKLEARN_TASKS.items()
}
_MAX_INFERRED_CLASSES = 100
_SPLIT_STREAM = 0x5EED
_CACHE_SIZE = 8


@dataclass(frozen=True)
class Dataset:
    """A split, standardised dataset (arrays are read-only and may be shared by threads)."""

    dataset_id: str
    task: str
    x_train: np.ndarray  # float32, standardised
    y_train: np.ndarray  # int64 class indices, or float32 standardised targets
    x_val: np.ndarray
    y_val: np.ndarray
    y_val_raw: np.ndarray | None  # regression: float64 targets in original units
    x_mean: np.ndarray
    x_std: np.ndarray
    y_mean: float
    y_std: float
    classes: list  # original class labels (classification), index = class index
    n_samples: int
    n_features: int

    @property
    def n_classes(self) -> int:
        """Number of classes (0 for regression)."""
        return len(self.classes)

    @property
    def n_outputs(self) -> int:
        """Width of the network's output layer."""
        return self.n_classes if self.task == "classification" else 1

    def summary(self) -> dict:
        """The ``dataset`` object reported by ``start_run``."""
        info: dict[str, Any] = {
            "id": self.dataset_id,
            "task": self.task,
            "n_samples": self.n_samples,
            "n_features": self.n_features,
        }
        if self.task == "classification":
            info["n_classes"] = self.n_classes
        info["n_train"] = int(self.x_train.shape[0])
        info["n_validation"] = int(self.x_val.shape[0])
        return info


def normalize_dataset_options(raw: Mapping[str, Any] | None) -> dict:
    """Validate ``dataset_options`` (rules of ``spec_rules.json``); unknown keys and bad
    values name the key."""
    return check_section("dataset_options", raw, "dataset_options")


# -- cache ----------------------------------------------------------------------------------

_cache: OrderedDict[tuple, Dataset] = OrderedDict()
_cache_lock = threading.Lock()
#: Datasets loaded elsewhere and handed to this process (the ray executor's tasks), keyed
#: by (id, options, seed) only: the file they came from need not exist here.
_provided: OrderedDict[tuple, Dataset] = OrderedDict()


def clear_cache() -> None:
    """Forget every cached and provided dataset."""
    with _cache_lock:
        _cache.clear()
        _provided.clear()


def _provided_key(dataset_id: Any, opts: Mapping[str, Any], seed: int) -> tuple:
    return (dataset_id, tuple(sorted(opts.items())), int(seed))


def provide_dataset(
    dataset_id: Any, options: Mapping[str, Any] | None, seed: int, dataset: Dataset
) -> None:
    """Make ``load_dataset(dataset_id, options, seed)`` return ``dataset`` in this process
    (loaded once by the run's driver and shared through Ray's object store, DESIGN §12)."""
    key = _provided_key(dataset_id, normalize_dataset_options(options), seed)
    with _cache_lock:
        _provided[key] = dataset
        _provided.move_to_end(key)
        while len(_provided) > _CACHE_SIZE:
            _provided.popitem(last=False)


def load_dataset(dataset_id: Any, options: Mapping[str, Any] | None, seed: int) -> Dataset:
    """Load, check, split and standardise ``dataset_id`` (cached per process); a dataset
    :func:`provide_dataset` handed to this process is returned as it is."""
    opts = normalize_dataset_options(options)
    with _cache_lock:
        provided = _provided.get(_provided_key(dataset_id, opts, seed))
    if provided is not None:
        return provided
    kind, rest = _parse_id(dataset_id)
    if "target" in opts and kind != "csv":
        raise contract_error(
            "dataset_options.target", "applies to csv datasets only", dataset_id=dataset_id
        )
    if kind == "synthetic":
        check_synthetic_options(rest, opts)
    elif stray := sorted(SYNTHETIC_OPTIONS & opts.keys()):
        raise contract_error(
            f"dataset_options.{stray[0]}",
            "applies to synthetic datasets only",
            dataset_id=dataset_id,
        )
    file_key: tuple = ()
    if kind in ("csv", "npz"):
        path = _existing_file(rest, dataset_id)
        stat = path.stat()
        file_key = (str(path), stat.st_size, stat.st_mtime_ns)
    key = (dataset_id, tuple(sorted(opts.items())), int(seed), file_key)
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None:
            _cache.move_to_end(key)
            return cached
        # Loading under the lock: concurrent trials of one run load the data once.
        if kind == "sklearn":
            x, y, task = _load_sklearn(rest, opts)
        elif kind == "synthetic":
            x, y = generate(rest, opts, int(seed))
            task = rest
        elif kind == "csv":
            x, y, task = _load_csv(path, opts)
        else:
            x, y, task = _load_npz(path, opts)
        dataset = _prepare(dataset_id, x, y, task, opts["validation_split"], int(seed))
        _cache[key] = dataset
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
        return dataset


def _parse_id(dataset_id: Any) -> tuple[str, str]:
    if not isinstance(dataset_id, str) or not dataset_id:
        raise contract_error("dataset_id", f"must be a non-empty string, got {dataset_id!r}")
    kind, sep, rest = dataset_id.partition(":")
    if not sep or kind not in ("sklearn", "synthetic", "csv", "npz") or not rest:
        raise contract_error(
            "dataset_id",
            f"unknown dataset {dataset_id!r}: expected sklearn:NAME, synthetic:NAME, csv:PATH "
            "or npz:PATH",
        )
    if kind == "sklearn" and rest not in SKLEARN_DATASETS:
        raise contract_error(
            "dataset_id",
            f"unknown scikit-learn dataset {rest!r} (known: {', '.join(SKLEARN_DATASETS)})",
        )
    if kind == "synthetic" and rest not in SYNTHETIC_DEFAULTS:
        raise contract_error(
            "dataset_id",
            f"unknown synthetic dataset {rest!r} (known: {', '.join(SYNTHETIC_DEFAULTS)})",
        )
    return kind, rest


def _existing_file(raw_path: str, dataset_id: str) -> Path:
    path = Path(raw_path).expanduser()
    path = path if path.is_absolute() else Path.cwd() / path
    if not path.exists():
        raise contract_error("dataset_id", f"dataset file not found: {path}", path=str(path))
    if not path.is_file():
        raise contract_error("dataset_id", f"dataset path is not a file: {path}", path=str(path))
    return path


def _load_sklearn(name: str, opts: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, str]:
    from sklearn import datasets as sk_datasets

    loader, task = SKLEARN_DATASETS[name]
    if opts.get("task", task) != task:
        raise contract_error(
            "dataset_options.task", f"sklearn:{name} is a {task} dataset, not {opts['task']}"
        )
    x, y = getattr(sk_datasets, loader)(return_X_y=True)
    return np.asarray(x, dtype=np.float64), np.asarray(y), task


def _load_csv(path: Path, opts: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, str]:
    target = opts.get("target", "target")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except UnicodeDecodeError as exc:
        raise contract_error("dataset_id", f"{path} is not UTF-8 text: {exc}") from exc
    except csv.Error as exc:
        raise contract_error("dataset_id", f"{path} is not valid CSV: {exc}") from exc
    except OSError as exc:
        raise OpError(
            "system_error", f"cannot read {path}: {exc.strerror or exc}", {"path": str(path)}
        ) from exc
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise contract_error("dataset_id", f"{path} is empty: a header row is required")
    header = [name.strip() for name in rows[0]]
    body = rows[1:]
    if target not in header:
        raise contract_error(
            "dataset_options.target",
            f"target column {target!r} not found in {path} (columns: {', '.join(header)})",
            path=str(path),
        )
    if len(header) < 2:
        raise contract_error("dataset_id", f"{path} has no feature column besides the target")
    if not body:
        raise contract_error("dataset_id", f"{path} has a header but no data rows")
    for line, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise contract_error(
                "dataset_id",
                f"{path} line {line} has {len(row)} fields, the header has {len(header)}",
            )
    columns = list(zip(*body, strict=True))
    t_index = header.index(target)
    features = []
    for index, name in enumerate(header):
        if index != t_index:
            features.append(_numeric_column(columns[index], name, path))
    x = np.stack(features, axis=1)
    raw_target = [cell.strip() for cell in columns[t_index]]
    try:
        y: np.ndarray = np.array(raw_target, dtype=np.float64)
    except ValueError:
        if opts.get("task") == "regression":
            _numeric_column(columns[t_index], target, path)  # raises, naming the bad value
        if any(cell == "" for cell in raw_target):
            raise contract_error(
                "dataset_id", f"column {target!r} of {path} has an empty value"
            ) from None
        y = np.array(raw_target)
    else:
        bad = ~np.isfinite(y)
        if bad.any():
            raise contract_error(
                "dataset_id",
                f"column {target!r} of {path} has a non-finite value on line "
                f"{int(np.argmax(bad)) + 2}",
                column=target,
            )
    return x, y, _infer_task(y, opts)


def _numeric_column(cells: tuple[str, ...], name: str, path: Path) -> np.ndarray:
    stripped = [cell.strip() for cell in cells]
    try:
        values = np.array(stripped, dtype=np.float64)
    except ValueError:
        for row, cell in enumerate(stripped, start=2):
            try:
                float(cell)
            except ValueError:
                raise contract_error(
                    "dataset_id",
                    f"column {name!r} of {path} is not numeric: line {row} has {cell!r}",
                    column=name,
                ) from None
        raise
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.argmax(bad)) + 2
        raise contract_error(
            "dataset_id",
            f"column {name!r} of {path} has a non-finite value on line {row}",
            column=name,
        )
    return values


#: The most bytes the arrays of an ``.npz`` dataset may hold once decompressed: a small
#: compressed file can stand for gigabytes of zeros.
MAX_NPZ_ARRAY_BYTES = 2 * 2**30


def _check_npz_size(path: Path) -> None:
    """Refuse an archive whose members decompress past :data:`MAX_NPZ_ARRAY_BYTES`, from
    its directory, before any array is read."""
    with zipfile.ZipFile(path) as archive:
        total = sum(member.file_size for member in archive.infolist())
    if total > MAX_NPZ_ARRAY_BYTES:
        raise contract_error(
            "dataset_id",
            f"{path} holds {total / 2**30:.1f} GiB of arrays once decompressed, over the "
            f"{MAX_NPZ_ARRAY_BYTES / 2**30:.0f} GiB an npz dataset may hold",
        )


def _load_npz(path: Path, opts: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, str]:
    try:
        _check_npz_size(path)
        with np.load(path, allow_pickle=False) as archive:
            missing = [name for name in ("X", "y") if name not in archive.files]
            if missing:
                raise contract_error(
                    "dataset_id",
                    f"{path} lacks array {missing[0]!r} (has: {', '.join(archive.files)})",
                )
            x = archive["X"]
            y = archive["y"]
    except OpError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise contract_error("dataset_id", f"{path} is not a readable npz file: {exc}") from exc
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise contract_error(
            "dataset_id", f"X in {path} must be a non-empty 2-D array, got shape {x.shape}"
        )
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool) or np.iscomplexobj(x):
        raise contract_error("dataset_id", f"X in {path} must be numeric, got dtype {x.dtype}")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise contract_error("dataset_id", f"X in {path} has non-finite values")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise contract_error(
            "dataset_id",
            f"y in {path} must be 1-D with one value per row of X ({x.shape[0]}), got {y.shape}",
        )
    if np.issubdtype(y.dtype, np.number) or y.dtype == bool:
        if np.iscomplexobj(y):
            raise contract_error("dataset_id", f"y in {path} must be real, got dtype {y.dtype}")
        y = y.astype(np.float64)
        if not np.isfinite(y).all():
            raise contract_error("dataset_id", f"y in {path} has non-finite values")
    elif not np.issubdtype(y.dtype, np.str_):
        raise contract_error(
            "dataset_id", f"y in {path} must be numbers or text labels, got dtype {y.dtype}"
        )
    elif opts.get("task") == "regression":
        raise contract_error("dataset_options.task", f"regression needs a numeric y in {path}")
    return x, y, _infer_task(y, opts)


def _infer_task(y: np.ndarray, opts: Mapping[str, Any]) -> str:
    if "task" in opts:
        return opts["task"]
    if not np.issubdtype(y.dtype, np.number):
        return "classification"
    integral = bool(np.all(np.equal(np.mod(y, 1.0), 0.0)))
    if integral and np.unique(y).size <= _MAX_INFERRED_CLASSES:
        return "classification"
    return "regression"


def _prepare(
    dataset_id: str, x: np.ndarray, y: np.ndarray, task: str, split: float, seed: int
) -> Dataset:
    n = x.shape[0]
    if n < 2:
        raise contract_error("dataset_id", f"{dataset_id} has {n} row(s): at least 2 are needed")
    rng = seeded_rng(seed, _SPLIT_STREAM)
    classes: list = []
    if task == "classification":
        labels, y_index = np.unique(y, return_inverse=True)
        if labels.size < 2:
            raise contract_error(
                "dataset_id", f"{dataset_id}: classification needs at least 2 classes"
            )
        classes = [
            int(c) if isinstance(c, float) and c.is_integer() else c for c in labels.tolist()
        ]
        y_index = y_index.astype(np.int64)
        val_parts = []
        for c in range(labels.size):
            members = rng.permutation(np.flatnonzero(y_index == c))
            k = int(round(members.size * split))
            if members.size >= 2:
                k = min(max(k, 1), members.size - 1)
            else:
                k = 0
            val_parts.append(members[:k])
        val_idx = np.sort(np.concatenate(val_parts))
    else:
        if not np.issubdtype(y.dtype, np.number):
            raise contract_error("dataset_id", f"{dataset_id}: regression needs numeric targets")
        k = min(max(int(round(n * split)), 1), n - 1)
        val_idx = np.sort(rng.permutation(n)[:k])
    in_val = np.zeros(n, dtype=bool)
    in_val[val_idx] = True
    train_idx = np.flatnonzero(~in_val)
    if val_idx.size == 0 or train_idx.size == 0:
        raise contract_error(
            "dataset_options.validation_split",
            f"{dataset_id}: the split leaves an empty training or validation set",
        )
    x_mean = x[train_idx].mean(axis=0)
    x_std = x[train_idx].std(axis=0)
    x_std[x_std == 0.0] = 1.0
    x_scaled = ((x - x_mean) / x_std).astype(np.float32)
    y_mean, y_std = 0.0, 1.0
    y_val_raw = None
    if task == "classification":
        y_train = y_index[train_idx]
        y_val = y_index[val_idx]
    else:
        y = y.astype(np.float64)
        y_mean = float(y[train_idx].mean())
        y_std = float(y[train_idx].std()) or 1.0
        y_scaled = ((y - y_mean) / y_std).astype(np.float32)
        y_train, y_val = y_scaled[train_idx], y_scaled[val_idx]
        y_val_raw = y[val_idx].copy()
    arrays = [x_scaled[train_idx], y_train, x_scaled[val_idx], y_val, y_val_raw, x_mean, x_std]
    arrays = [np.ascontiguousarray(a) if a is not None else None for a in arrays]
    for array in arrays:
        if array is not None:
            array.setflags(write=False)
    x_train, y_train, x_val, y_val, y_val_raw, x_mean, x_std = arrays
    return Dataset(
        dataset_id=dataset_id,
        task=task,
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        y_val_raw=y_val_raw,
        x_mean=x_mean,
        x_std=x_std,
        y_mean=y_mean,
        y_std=y_std,
        classes=classes,
        n_samples=int(n),
        n_features=int(x.shape[1]),
    )
