"""How many BLAS threads the NAS trainer computes with (``CEREBROS_NAS_BLAS_THREADS``,
default 1; ``0``/``off`` leaves BLAS alone), and fixing that number before numpy loads.

A thread pool sized when the BLAS library loads is the only limit that always holds:
limiting a pool already running (``threadpoolctl``, per training) was seen not to take in
some trainings of a process whose other threads were busy, and a trial's matrix products
then split over two threads and summed in another order — the same spec and seed gave
different metrics in 2 of 6 runs. So importing :mod:`cerebros_service` sets
``OPENBLAS_NUM_THREADS`` and ``MKL_NUM_THREADS`` (unless the environment sets them) while
numpy is not loaded yet; the per-training limit stays for processes that loaded it first.
Imports nothing heavy.
"""

from __future__ import annotations

import os
import sys

#: The variable choosing the trainer's BLAS threads.
BLAS_THREADS_ENV = "CEREBROS_NAS_BLAS_THREADS"
#: The variables BLAS libraries read when they load.
POOL_SIZE_VARIABLES = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def blas_limit() -> int | None:
    """The BLAS threads a trial trains with, or ``None`` to leave BLAS alone."""
    raw = os.environ.get(BLAS_THREADS_ENV, "1").strip().lower()
    if raw in ("", "0", "off", "none"):
        return None
    try:
        return max(1, int(raw))
    except ValueError:
        return 1


def size_pools_before_numpy_loads() -> None:
    """Set the BLAS pool size variables to :func:`blas_limit` while numpy is not loaded
    (a variable the environment already sets wins)."""
    limit = blas_limit()
    if limit is None or "numpy" in sys.modules:
        return
    for variable in POOL_SIZE_VARIABLES:
        os.environ.setdefault(variable, str(limit))
