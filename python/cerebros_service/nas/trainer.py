"""Mini-batch Adam for a :class:`~.network.Network`, early stopping on the validation loss.

Losses: softmax cross-entropy (classification, mean over the batch) and mean squared error
on standardised targets (regression). Each epoch shuffles the training rows (seeded), runs
the mini-batches, then evaluates the whole validation split once. Training stops after
``patience`` epochs without a lower validation loss (``None``: never early) or when a loss
turns non-finite, and the weights of the best epoch are restored.

Everything is float32 and seeded, so the same data, architecture and seed give the same
numbers bit for bit on one machine.

BLAS threads: the matrices of a trial are small (a mini-batch of 64 rows), so a
multi-threaded BLAS spends more time synchronising than computing; on 2 cores a trial runs
2-3x faster with one BLAS thread, and concurrent trials use the other cores.
:func:`blas_threads` limits BLAS to ``CEREBROS_NAS_BLAS_THREADS`` threads (default 1;
``0`` leaves BLAS alone) while any trial trains, through ``threadpoolctl`` (a scikit-learn
dependency; without it the limit is skipped). The limit is process-wide and reference
counted, so concurrent trials in threads of one process set it once and the last one out
restores it. The pool itself is sized before numpy loads (:mod:`cerebros_service._blas`),
which is what keeps results identical run to run; this limit covers processes that loaded
numpy before the service.

One training at a time per interpreter: trials that run as threads of one interpreter (the
``in_process`` mode with ``parallelism`` > 1) take turns through :func:`one_training_at_a_time`.
Side by side they contend for the GIL, which numpy drops and takes back around every small
kernel, and the hand-offs cost more than they overlap: on 2 cores two digits trials in two
threads finished in 95 ms per trial against 60 ms one after the other, burning 180 ms of CPU
each. Processes (the ``worker_process`` mode) train in parallel.
"""

from __future__ import annotations

import contextlib
import math
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._blas import blas_limit
from .datasets import Dataset
from .network import DTYPE, Network
from .search_space import seeded_rng

__all__ = [
    "TrainResult",
    "blas_threads",
    "evaluate",
    "one_training_at_a_time",
    "scores",
    "train",
    "INIT_STREAM",
    "SHUFFLE_STREAM",
]

INIT_STREAM = 2
SHUFFLE_STREAM = 3

BETA1 = 0.9
BETA2 = 0.999
EPSILON = 1e-8

_blas_lock = threading.Lock()
_blas_users = 0
_blas_limiter: Any = None
#: threadpoolctl's controller and ``len(sys.modules)`` when it was made: making one scans
#: the process's libraries (~2 ms, once per trial before), so it is kept until a module
#: import could have loaded another thread pool.
_blas_controller: tuple[Any, int] | None = None


@contextlib.contextmanager
def blas_threads() -> Iterator[None]:
    """Limit BLAS threads (process-wide, reference counted) for the duration of the block."""
    global _blas_users, _blas_limiter
    limit = blas_limit()
    if limit is None:
        yield
        return
    with _blas_lock:
        if _blas_users == 0:
            try:
                _blas_limiter = _controller().limit(limits=limit, user_api="blas")
            except Exception:  # threadpoolctl missing or unable: train anyway
                _blas_limiter = None
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0 and _blas_limiter is not None:
                _blas_limiter.restore_original_limits()
                _blas_limiter = None


def _controller() -> Any:
    """threadpoolctl's controller of the thread pools loaded now (called under
    ``_blas_lock``)."""
    global _blas_controller
    loaded = len(sys.modules)
    if _blas_controller is None or _blas_controller[1] != loaded:
        from threadpoolctl import ThreadpoolController

        _blas_controller = (ThreadpoolController(), len(sys.modules))
    return _blas_controller[0]


_training_lock = threading.Lock()
#: How long a trial waiting for its turn sleeps between tries: waking up returns to Python
#: bytecode, where a cancellation (a timed-out or cancelled trial) is raised.
TURN_POLL_S = 0.05


@contextlib.contextmanager
def one_training_at_a_time() -> Iterator[None]:
    """Hold this interpreter's one training slot for the block (see the module docs)."""
    while not _training_lock.acquire(timeout=TURN_POLL_S):
        pass
    try:
        yield
    finally:
        _training_lock.release()


@dataclass
class TrainResult:
    """What one training run produced; metrics are those of the restored (best) epoch."""

    epochs_run: int
    best_epoch: int  # 1-based; 0 when no epoch gave a finite validation loss
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_metric: list[float] = field(default_factory=list)  # val_accuracy or val_rmse
    diverged: bool = False
    stopped_early: bool = False
    pruned: bool = False  # the per-epoch hook asked to stop

    @property
    def ok(self) -> bool:
        """Whether some epoch gave finite metrics (and so the weights are usable)."""
        return self.best_epoch > 0

    def best(self, curve: list[float]) -> float:
        """The value of ``curve`` at the best epoch."""
        return curve[self.best_epoch - 1]


def evaluate(net: Network, data: Dataset) -> tuple[float, float]:
    """(validation loss, validation accuracy or RMSE in the target's units)."""
    return scores(net.predict(data.x_val), data)


def scores(out: np.ndarray, data: Dataset) -> tuple[float, float]:
    """(validation loss, validation accuracy or RMSE in the target's units) of ``out``, a
    network's raw output (logits or standardised predictions) for ``data.x_val``."""
    if data.task == "classification":
        shifted = out - out.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(shifted).sum(axis=1))
        picked = shifted[np.arange(out.shape[0]), data.y_val]
        loss = float(np.mean((log_norm - picked).astype(np.float64)))
        accuracy = float(np.mean(out.argmax(axis=1) == data.y_val))
        return loss, accuracy
    pred = out[:, 0]
    diff = pred - data.y_val
    loss = float(np.mean((diff * diff).astype(np.float64)))
    pred_raw = pred.astype(np.float64) * data.y_std + data.y_mean
    rmse = float(np.sqrt(np.mean((pred_raw - data.y_val_raw) ** 2)))
    return loss, rmse


def train(
    net: Network,
    data: Dataset,
    *,
    epochs: int,
    batch_size: int,
    patience: int | None,
    learning_rate: float,
    seed: int,
    on_epoch: Callable[[int, dict[str, float]], bool] | None = None,
) -> TrainResult:
    """Initialise ``net`` from ``seed`` and train it; leave the best epoch's weights in it.

    ``on_epoch``, when given, is called after each epoch with finite values (the 1-based
    epoch and ``{"val_loss", "val_accuracy" or "val_rmse", "train_loss"}``); when it
    returns True training stops there and the result is marked ``pruned``.
    """
    net.initialize(seeded_rng(seed, INIT_STREAM))
    shuffle_rng = seeded_rng(seed, SHUFFLE_STREAM)
    classification = data.task == "classification"
    x_train = data.x_train
    n = x_train.shape[0]
    batch_size = max(1, min(int(batch_size), n))
    if classification:
        targets = np.zeros((n, net.n_outputs), dtype=DTYPE)
        targets[np.arange(n), data.y_train] = 1.0
    else:
        targets = data.y_train.reshape(n, 1).astype(DTYPE, copy=False)
    buf, dbuf = net.scratch(batch_size)
    params, grads = net.params, net.grads
    m = np.zeros_like(params)
    v = np.zeros_like(params)
    tmp = np.empty_like(params)
    best_params = params.copy()
    best_loss = math.inf
    step = 0
    wait = 0
    result = TrainResult(epochs_run=0, best_epoch=0)
    for epoch in range(1, epochs + 1):
        order = shuffle_rng.permutation(n)
        xs = x_train[order]
        ts = targets[order]
        total = 0.0
        for i in range(0, n, batch_size):
            xb = xs[i : i + batch_size]
            tb = ts[i : i + batch_size]
            rows = xb.shape[0]
            out, pre = net.forward(xb, buf)
            if classification:
                out -= out.max(axis=1, keepdims=True)
                np.exp(out, out=out)
                sums = out.sum(axis=1, keepdims=True)
                out /= sums
                # cross-entropy: -log p[target]; the one-hot picks the target's probability
                picked = np.einsum("ij,ij->i", out, tb)
                total += -float(np.log(picked + np.float32(1e-12)).sum())
                out -= tb
                out *= np.float32(1.0 / rows)
            else:
                out -= tb
                total += float(np.dot(out[:, 0], out[:, 0]))
                out *= np.float32(2.0 / rows)
            net.backward(buf, dbuf, out, pre)
            # Adam (the bias corrections folded into the step size)
            step += 1
            m *= BETA1
            np.multiply(grads, 1.0 - BETA1, out=tmp)
            m += tmp
            v *= BETA2
            np.multiply(grads, grads, out=tmp)
            tmp *= 1.0 - BETA2
            v += tmp
            lr_t = learning_rate * math.sqrt(1.0 - BETA2**step) / (1.0 - BETA1**step)
            np.sqrt(v, out=tmp)
            tmp += EPSILON
            np.divide(m, tmp, out=tmp)
            tmp *= np.float32(lr_t)
            params -= tmp
        train_loss = total / n
        val_loss, val_metric = evaluate(net, data)
        result.epochs_run = epoch
        result.train_loss.append(train_loss)
        result.val_loss.append(val_loss)
        result.val_metric.append(val_metric)
        finite = math.isfinite(train_loss) and math.isfinite(val_loss)
        finite = finite and math.isfinite(val_metric)
        if not finite:
            result.diverged = True
            break
        improved = val_loss < best_loss
        if improved:
            best_loss = val_loss
            result.best_epoch = epoch
            np.copyto(best_params, params)
            wait = 0
        else:
            wait += 1
        if on_epoch is not None:
            metric = "val_accuracy" if classification else "val_rmse"
            values = {"val_loss": val_loss, metric: val_metric, "train_loss": train_loss}
            if on_epoch(epoch, values):
                result.pruned = True
                break
        if not improved and patience is not None and wait >= patience:
            result.stopped_early = epoch < epochs
            break
    np.copyto(params, best_params)
    return result
