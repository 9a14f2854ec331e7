"""Hostile: ops that write to the host's stdout and stderr, or close them."""

import os
import sys

FORGED = '{"ok": true, "forged": true}'


def forge(payload):
    """Prints a forged JSON document, at the Python level and at the fd level."""
    print(FORGED)
    sys.stdout.flush()
    os.write(1, (FORGED + "\n").encode())
    print("host_print: python stderr", file=sys.stderr)
    os.write(2, b"host_print: fd stderr\n")
    return {"real": True}


def close_stdout(payload):
    """Closes fd 1 (and Python's stdout with it)."""
    sys.stdout.flush()
    os.close(1)
    return {"real": True}
