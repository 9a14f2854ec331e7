"""Hostile: the module's top level blocks in C (a long sleep), so its import never finishes."""

import time

time.sleep(3600)


def health(payload):
    return {"status": "ok"}
