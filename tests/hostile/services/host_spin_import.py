"""Hostile: the module's top level spins for ever, so its import never finishes."""

while True:
    pass


def health(payload):
    return {"status": "ok"}
