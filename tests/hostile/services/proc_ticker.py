"""Hostile: an op that keeps working until it is stopped.

``tick`` appends a line to the file ``payload["path"]`` every 10 ms, for ``payload["seconds"]``
(default: for ever), so a test can see whether a cancelled call really stopped. ``crash`` ends
the process at once (a worker child dies). ``surrogate`` returns a string holding a lone
surrogate, which is not Unicode text; ``raise_surrogate`` raises with one in its message.
"""

import os
import time


def tick(payload: dict) -> dict:
    end = time.monotonic() + payload.get("seconds", 1e9)
    with open(payload["path"], "a") as out:
        while time.monotonic() < end:
            out.write("tick\n")
            out.flush()
            time.sleep(0.01)
    return {"done": True}


def crash(payload: dict) -> dict:
    os._exit(payload.get("code", 3))


def surrogate(payload: dict) -> dict:
    return {"s": chr(0xD800)}


def raise_surrogate(payload: dict) -> dict:
    raise ValueError("bad " + chr(0xDC00))


def echo(payload: dict) -> dict:
    return payload
