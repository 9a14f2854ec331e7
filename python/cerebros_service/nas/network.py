"""An :class:`~.search_space.Architecture` compiled to a few masked dense *stages*.

Every unit's output occupies a block of columns of one activation buffer whose first columns
are the input features. Units are grouped into stages by ``(level, lateral depth)``: a unit
with no lateral input has depth 0, one fed laterally has depth ``1 + max(depth of its lateral
sources)``. All inputs of a stage's units lie in earlier columns, so one stage is one matmul
of a contiguous column range ``[lo, hi)`` of the buffer with a weight matrix that is zero
(and kept zero by a mask on its gradient) where a unit has no connection. For the usual
search spaces this gives one to three matmuls per level whatever the wiring, which keeps the
Python overhead per mini-batch small.

All parameters live in one flat float32 vector (weights and biases are views into it), so
that Adam, the best-weights snapshot and the artifact each handle a single array.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .search_space import Architecture

__all__ = ["Layout", "Network", "Stage", "StagePlan", "plan_layout", "training_bytes"]

DTYPE = np.float32
_GELU_C = np.float32(np.sqrt(2.0 / np.pi))
_GELU_A = np.float32(0.044715)
#: Rows of one forward pass when a whole split is evaluated (:meth:`Network.predict`).
EVAL_CHUNK = 4096


@dataclass
class Stage:
    """One matmul: buffer columns ``[lo, hi)`` → columns ``[start, stop)``."""

    level: int
    units: list[tuple[int, int]]  # (level, index) of the units it computes, in column order
    lo: int
    hi: int
    start: int
    stop: int
    w_slice: slice
    b_slice: slice
    mask: np.ndarray | None  # float32 (hi - lo, stop - start); None when dense
    weight: np.ndarray | None = None  # views into the flat parameter vector
    bias: np.ndarray | None = None
    grad_weight: np.ndarray | None = None
    grad_bias: np.ndarray | None = None


@dataclass(frozen=True)
class StagePlan:
    """Where one stage's matmul reads and writes in the activation buffer (no arrays)."""

    level: int
    units: list[tuple[int, int]]  # (level, index) of the units it computes, in column order
    sources: list[list[tuple[int, int]]]  # each unit's input units, in the order of ``units``
    lo: int
    hi: int
    start: int
    stop: int


@dataclass(frozen=True)
class Layout:
    """The column layout of an architecture: every unit's columns, the stages, the buffer's
    width and the first column the output layer reads."""

    columns: dict[tuple[int, int], tuple[int, int]]
    stages: list[StagePlan]
    width: int
    out_lo: int

    def dense_parameters(self, n_outputs: int) -> int:
        """The length of the flat parameter vector (masked-out weights included)."""
        stages = sum((p.hi - p.lo + 1) * (p.stop - p.start) for p in self.stages)
        return stages + (self.width - self.out_lo + 1) * n_outputs


def plan_layout(arch: Architecture, n_inputs: int) -> Layout:
    """The layout of ``arch`` over ``n_inputs`` features, computed without allocating."""
    columns: dict[tuple[int, int], tuple[int, int]] = {(0, 0): (0, n_inputs)}
    stages: list[StagePlan] = []
    col = n_inputs
    for k, level in enumerate(arch.levels, start=1):
        depth: list[int] = []
        for j in range(len(level)):
            lats = arch.laterals[k - 1][j]
            depth.append(1 + max(depth[i] for i in lats) if lats else 0)
        for d in range(max(depth) + 1):
            members = [(k, j) for j in range(len(level)) if depth[j] == d]
            start = col
            for unit in members:
                columns[unit] = (col, col + level[unit[1]])
                col += level[unit[1]]
            sources = [
                [*arch.inputs[k - 1][j], *((k, i) for i in arch.laterals[k - 1][j])]
                for _, j in members
            ]
            lo = min(columns[s][0] for srcs in sources for s in srcs)
            hi = max(columns[s][1] for srcs in sources for s in srcs)
            stages.append(StagePlan(k, members, sources, lo, hi, start, col))
    last = len(arch.levels)
    out_lo = min(columns[(last, j)][0] for j in range(len(arch.levels[-1])))
    return Layout(columns, stages, col, out_lo)


def training_bytes(arch: Architecture, n_inputs: int, n_outputs: int, rows: int) -> int:
    """About the memory training ``arch`` takes, whichever trainer: six float32 copies of the
    parameters (weights, gradients, masks, Adam's two moments, the best epoch's weights) and
    the activations and their gradients for ``rows`` rows, the most one pass sees (a
    mini-batch, or an evaluation chunk of at most :data:`EVAL_CHUNK` rows)."""
    layout = plan_layout(arch, n_inputs)
    floats = 6 * layout.dense_parameters(n_outputs) + 2 * rows * layout.width
    return floats * np.dtype(DTYPE).itemsize


class Network:
    """The compiled network: layout, flat parameters, forward and backward passes."""

    def __init__(self, arch: Architecture, n_inputs: int, n_outputs: int, task: str) -> None:
        if task not in ("classification", "regression"):
            raise ValueError(f"unknown task {task!r}")
        self.arch = arch
        self.task = task
        self.n_inputs = int(n_inputs)
        self.n_outputs = int(n_outputs)
        self.activation = arch.activation
        layout = plan_layout(arch, self.n_inputs)
        self.columns = layout.columns
        self.stages: list[Stage] = []
        offset = 0  # running size of the flat parameter vector
        for plan in layout.stages:
            mask = np.zeros((plan.hi - plan.lo, plan.stop - plan.start), dtype=DTYPE)
            for (_, j), srcs in zip(plan.units, plan.sources, strict=True):
                c0, c1 = self.columns[(plan.level, j)]
                for s in srcs:
                    s0, s1 = self.columns[s]
                    mask[s0 - plan.lo : s1 - plan.lo, c0 - plan.start : c1 - plan.start] = 1.0
            n_w = mask.size
            stage = Stage(
                level=plan.level,
                units=plan.units,
                lo=plan.lo,
                hi=plan.hi,
                start=plan.start,
                stop=plan.stop,
                w_slice=slice(offset, offset + n_w),
                b_slice=slice(offset + n_w, offset + n_w + (plan.stop - plan.start)),
                mask=None if mask.all() else mask,
            )
            offset = stage.b_slice.stop
            self.stages.append(stage)
        self.width = layout.width
        self.out_lo = layout.out_lo
        n_last = self.width - self.out_lo
        self.out_w_slice = slice(offset, offset + n_last * self.n_outputs)
        self.out_b_slice = slice(self.out_w_slice.stop, self.out_w_slice.stop + self.n_outputs)
        self.n_dense_params = self.out_b_slice.stop
        self.params = np.zeros(self.n_dense_params, dtype=DTYPE)
        self.grads = np.zeros(self.n_dense_params, dtype=DTYPE)
        for stage in self.stages:
            shape = (stage.hi - stage.lo, stage.stop - stage.start)
            stage.weight = self.params[stage.w_slice].reshape(shape)
            stage.bias = self.params[stage.b_slice]
            stage.grad_weight = self.grads[stage.w_slice].reshape(shape)
            stage.grad_bias = self.grads[stage.b_slice]
        self.out_weight = self.params[self.out_w_slice].reshape(n_last, self.n_outputs)
        self.out_bias = self.params[self.out_b_slice]
        self.grad_out_weight = self.grads[self.out_w_slice].reshape(n_last, self.n_outputs)
        self.grad_out_bias = self.grads[self.out_b_slice]
        self._buffers: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    # -- sizes and initialisation ------------------------------------------------------------

    @property
    def n_params(self) -> int:
        """Trainable parameters that shape the output: masked-out weights and the units
        whose output reaches nothing (:meth:`~.search_space.Architecture.live_units`) are not
        counted, so the Keras model of the same architecture has exactly as many."""
        live = self.arch.live_units()
        total = self.out_weight.size + self.out_bias.size
        for stage in self.stages:
            for unit in stage.units:
                if unit not in live:
                    continue
                c0, c1 = self.columns[unit]
                rows = stage.hi - stage.lo
                if stage.mask is None:
                    total += rows * (c1 - c0)
                else:
                    total += int(stage.mask[:, c0 - stage.start : c1 - stage.start].sum())
                total += c1 - c0
        return int(total)

    def initialize(self, rng: np.random.Generator) -> None:
        """He-normal (relu, elu, gelu) or Glorot-uniform (tanh, sigmoid) weights, zero biases.

        The fan-in of a unit counts its real connections only.
        """
        he = self.activation in ("relu", "elu", "gelu")
        self.params.fill(0.0)
        for stage in self.stages:
            shape = stage.weight.shape
            fan_in = (
                np.full(shape[1], shape[0], dtype=np.float64)
                if stage.mask is None
                else stage.mask.sum(axis=0).astype(np.float64)
            )
            if he:
                w = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
            else:
                limit = np.sqrt(6.0 / (fan_in + shape[1]))
                w = rng.uniform(-1.0, 1.0, shape) * limit
            if stage.mask is not None:
                w *= stage.mask
            stage.weight[...] = w
        n_last, n_out = self.out_weight.shape
        limit = np.sqrt(6.0 / (n_last + n_out))
        self.out_weight[...] = rng.uniform(-limit, limit, (n_last, n_out))

    # -- passes ------------------------------------------------------------------------------

    def scratch(self, rows: int) -> tuple[np.ndarray, np.ndarray]:
        """Reusable (activations, gradients) buffers of ``rows`` rows (not thread-safe)."""
        buffers = self._buffers.get(rows)
        if buffers is None:
            buffers = (
                np.empty((rows, self.width), dtype=DTYPE),
                np.empty((rows, self.width - self.n_inputs), dtype=DTYPE),
            )
            self._buffers[rows] = buffers
        return buffers

    def forward(self, x: np.ndarray, buf: np.ndarray | None = None) -> tuple[np.ndarray, list]:
        """Fill ``buf`` (rows of ``x``) with every unit's output; return (output, pre-acts).

        The output is the logits (classification) or the predictions (regression). The
        pre-activation list is only filled for gelu, whose derivative needs it.
        """
        rows = x.shape[0]
        if buf is None:
            buf = self.scratch(rows)[0]
        buf = buf[:rows]
        buf[:, : self.n_inputs] = x
        pre: list = []
        act = self.activation
        for stage in self.stages:
            z = buf[:, stage.lo : stage.hi] @ stage.weight
            z += stage.bias
            out = buf[:, stage.start : stage.stop]
            if act == "relu":
                np.maximum(z, 0.0, out=out)
            elif act == "elu":
                neg = np.minimum(z, 0.0)
                np.expm1(neg, out=neg)
                np.maximum(z, neg, out=out)
            elif act == "tanh":
                np.tanh(z, out=out)
            elif act == "sigmoid":
                z *= 0.5
                np.tanh(z, out=z)
                z += 1.0
                np.multiply(z, 0.5, out=out)
            else:  # gelu (tanh approximation)
                pre.append(z)
                inner = z * z
                inner *= _GELU_A
                inner += 1.0
                inner *= z
                inner *= _GELU_C
                np.tanh(inner, out=inner)
                inner += 1.0
                inner *= z
                np.multiply(inner, 0.5, out=out)
        logits = buf[:, self.out_lo :] @ self.out_weight
        logits += self.out_bias
        return logits, pre

    def backward(self, buf: np.ndarray, dbuf: np.ndarray, d_out: np.ndarray, pre: list) -> None:
        """Write every parameter's gradient into :attr:`grads`, given d(loss)/d(output).

        ``buf`` holds the forward pass of the same rows; ``dbuf`` is scratch of the same row
        count (columns after the inputs).
        """
        rows = d_out.shape[0]
        buf = buf[:rows]
        dbuf = dbuf[:rows]
        n_in = self.n_inputs
        dbuf.fill(0.0)
        np.matmul(buf[:, self.out_lo :].T, d_out, out=self.grad_out_weight)
        np.sum(d_out, axis=0, out=self.grad_out_bias)
        dbuf[:, self.out_lo - n_in :] = d_out @ self.out_weight.T
        act = self.activation
        gelu_index = len(pre)
        for stage in reversed(self.stages):
            dz = dbuf[:, stage.start - n_in : stage.stop - n_in]
            h = buf[:, stage.start : stage.stop]
            if act == "relu":
                dz = dz * (h > 0.0)
            elif act == "elu":
                dz = dz * (np.minimum(h, 0.0) + 1.0)
            elif act == "tanh":
                dz = dz * (1.0 - h * h)
            elif act == "sigmoid":
                dz = dz * (h * (1.0 - h))
            else:
                gelu_index -= 1
                dz = dz * _gelu_grad(pre[gelu_index])
            np.matmul(buf[:, stage.lo : stage.hi].T, dz, out=stage.grad_weight)
            if stage.mask is not None:
                stage.grad_weight *= stage.mask
            np.sum(dz, axis=0, out=stage.grad_bias)
            first = max(stage.lo, n_in)
            if first < stage.hi:
                dbuf[:, first - n_in : stage.hi - n_in] += dz @ stage.weight[first - stage.lo :].T

    def predict(self, x: np.ndarray, chunk: int = EVAL_CHUNK) -> np.ndarray:
        """The network's raw output (logits or predictions) for all rows of ``x``."""
        outputs = []
        rows = min(chunk, max(1, x.shape[0]))
        buf = np.empty((rows, self.width), dtype=DTYPE)
        for i in range(0, x.shape[0], chunk):
            out, _ = self.forward(x[i : i + chunk], buf)
            outputs.append(out.copy())
        if not outputs:
            return np.empty((0, self.n_outputs), dtype=DTYPE)
        return np.concatenate(outputs)

    def layout(self) -> dict:
        """A JSON-ready description of the compiled layout (stored in artifacts)."""
        return {
            "n_inputs": self.n_inputs,
            "n_outputs": self.n_outputs,
            "width": self.width,
            "output_columns": [self.out_lo, self.width],
            "stages": [
                {
                    "level": s.level,
                    "units": [list(u) for u in s.units],
                    "input_columns": [s.lo, s.hi],
                    "output_columns": [s.start, s.stop],
                }
                for s in self.stages
            ],
            "unit_columns": {f"{k},{j}": list(c) for (k, j), c in self.columns.items()},
        }


def _gelu_grad(z: np.ndarray) -> np.ndarray:
    """d gelu(z) / dz for the tanh approximation."""
    z2 = z * z
    t = np.tanh(_GELU_C * (z + _GELU_A * z2 * z))
    return 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * _GELU_C * (1.0 + 3.0 * _GELU_A * z2)
