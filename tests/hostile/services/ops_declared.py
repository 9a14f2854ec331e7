"""Service that exposes callables it did not define, on purpose, by listing them in
``__bridge_ops__`` (DESIGN §10). ``run`` is imported too, but not listed: never an op."""

import functools
from subprocess import run  # noqa: F401

from ops_helpers import shared  # noqa: F401  (listed below)

__bridge_ops__ = ["shared", "tagged", "counter"]


def _tag(p: dict, tag: str) -> dict:
    return {"tag": tag}


class _Counter:
    def __call__(self, p: dict) -> dict:
        return {"counter": True}


tagged = functools.partial(_tag, tag="x")
counter = _Counter()


def health(p: dict) -> dict:
    return {"status": "ok"}


def own(p: dict) -> dict:
    return {"own": True}
