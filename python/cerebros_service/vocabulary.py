"""The names the host and the service share, from the one list both languages check.

``vocabulary.json`` (beside this module) lists the error classes (DESIGN §9), the contract
names (DESIGN §3), the statuses a trial and a run report and the directions of an objective.
The Rust host defines the same names as types (``ErrorClass``, ``CONTRACT_NAMES``,
``TrialStatus``, ``RunStatus``, ``Direction``);
``tests/vocabulary.rs`` fails when they differ from the file, and
``tests/python/test_vocabulary.py`` when the service names a class, contract or status the
file lacks.

``cerebros_service._dispatch`` cannot import this module (the in-process mode loads its
source alone), so it names its classes as literals; the Python test checks those too.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["CONTRACTS", "DIRECTIONS", "ERROR_CLASSES", "RUN_STATUSES", "TRIAL_STATUSES"]

_TABLE = json.loads(Path(__file__).with_name("vocabulary.json").read_text(encoding="utf-8"))

#: The error classes, in the host's order.
ERROR_CLASSES: tuple[str, ...] = tuple(_TABLE["error_classes"])

#: The version-1 contract names, in lifecycle order.
CONTRACTS: tuple[str, ...] = tuple(_TABLE["contracts"])

#: What a ``trial_reported`` may say of its trial.
TRIAL_STATUSES: tuple[str, ...] = tuple(_TABLE["trial_statuses"])

#: What a ``run_finalized`` may say of its run.
RUN_STATUSES: tuple[str, ...] = tuple(_TABLE["run_statuses"])

#: Whether a larger (``maximize``) or a smaller (``minimize``) objective is better.
DIRECTIONS: tuple[str, ...] = tuple(_TABLE["directions"])
