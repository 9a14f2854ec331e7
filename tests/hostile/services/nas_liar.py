"""A NAS service whose run_trial lies: cerebros_service's real ops, with the reply of chosen
trials rewritten after they trained.

``NAS_LIES`` (read per call) is a JSON object from trial index to a lie:

* ``string_metric`` / ``bool_metric`` / ``nan_metric`` / ``accuracy_7``: the objective
  ``val_accuracy`` becomes ``"high"`` / ``True`` / NaN / 7;
* ``no_objective``: the objective is left out of a succeeded reply;
* ``bad_status``: status ``"great"``; ``silent_failure``: status ``failed``, no warnings;
* ``artifact_outside``: ``artifact_uri`` is ``file:///etc/passwd``;
* ``artifact_symlink``: ``artifact_uri`` is a symlink in the run's artifacts folder that
  points at ``/etc/passwd``;
* ``ids=RUN,TRIAL``: the reply names run ``RUN`` and trial ``TRIAL``.
"""

import json
import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[3] / "python"))

import cerebros_service as _service  # noqa: E402

health = _service.health
start_run = _service.start_run
record_trial = _service.record_trial
finalize_run = _service.finalize_run
__bridge_ops__ = ["health", "start_run", "record_trial", "finalize_run"]


def run_trial(p: dict) -> dict:
    reply = _service.run_trial(p)
    lie = json.loads(os.environ.get("NAS_LIES", "{}")).get(str(p["index"]))
    if lie is not None:
        _tell(lie, reply)
    return reply


def _tell(lie: str, reply: dict) -> None:
    metrics = reply["metrics"]
    if lie.startswith("ids="):
        reply["run_id"], reply["trial_id"] = lie.removeprefix("ids=").split(",")
    elif lie in ("string_metric", "bool_metric", "nan_metric", "accuracy_7"):
        metrics["val_accuracy"] = {
            "string_metric": "high",
            "bool_metric": True,
            "nan_metric": float("nan"),
            "accuracy_7": 7,
        }[lie]
    elif lie == "no_objective":
        del metrics["val_accuracy"]
    elif lie == "bad_status":
        reply["status"] = "great"
    elif lie == "silent_failure":
        reply["status"], reply["warnings"] = "failed", []
    elif lie == "artifact_outside":
        reply["artifact_uri"] = "file:///etc/passwd"
    elif lie == "artifact_symlink":
        link = pathlib.Path(reply["artifact_uri"].removeprefix("file://")).with_name("evil.npz")
        link.unlink(missing_ok=True)
        link.symlink_to("/etc/passwd")
        reply["artifact_uri"] = link.as_uri()
    else:
        raise ValueError(f"unknown lie {lie!r}")
