"""Not a service: functions that the hostile `ops_*` services import from another module."""


def shared(p: dict) -> dict:
    """A well-behaved op-shaped function, defined here and imported elsewhere."""
    return {"shared": True}
