"""Hostile: a service module that imports ``signal`` and ``subprocess`` and installs its own
SIGINT handler (one that does nothing) wherever it is allowed to.

Importing ``signal`` (``subprocess`` imports it too) into an interpreter whose SIGINT is at its
default installs CPython's own SIGINT handler, which only sets a flag for the interpreter's main
thread; a host whose main thread never runs Python then never sees Ctrl-C. ``tick`` appends a
line to ``payload["path"]`` every 10 ms until it is stopped.
"""

import signal
import subprocess  # noqa: F401  (imported for its side effect on signal handling)
import time


def _swallow(signum, frame):
    pass


try:
    signal.signal(signal.SIGINT, _swallow)
except ValueError:  # not the interpreter's main thread
    pass


def tick(payload: dict) -> dict:
    with open(payload["path"], "a") as out:
        while True:
            out.write("tick\n")
            out.flush()
            time.sleep(0.01)
