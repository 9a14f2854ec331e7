"""Hostile: a service module whose import installs its own SIGINT handler (one that does
nothing, or ``SIG_IGN`` when ``PROC_SIGINT=ignore``; where it is allowed to) and then takes a
long time.

When ``PROC_IMPORT_MARKER`` names a file, the importing process writes its pid there first, so
a test knows the import has begun and can check that the process is gone afterwards.
"""

import os
import signal
import time


def _swallow(signum, frame):
    pass


try:
    ignore = os.environ.get("PROC_SIGINT") == "ignore"
    signal.signal(signal.SIGINT, signal.SIG_IGN if ignore else _swallow)
except ValueError:  # not the interpreter's main thread
    pass

if os.environ.get("PROC_IMPORT_MARKER"):
    with open(os.environ["PROC_IMPORT_MARKER"], "w") as marker:
        marker.write(str(os.getpid()))
time.sleep(float(os.environ.get("PROC_IMPORT_SECONDS", "30")))


def echo(payload: dict) -> dict:
    return payload
