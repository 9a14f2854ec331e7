"""Hostile service: its ``__bridge_ops__`` names an attribute it lacks and a value that is
not callable. Both are contract errors when called, and ``validate`` fails."""

__bridge_ops__ = ["missing", "LIMIT"]

LIMIT = 3


def health(p: dict) -> dict:
    return {"status": "ok"}


def own(p: dict) -> dict:
    return {"own": True}
