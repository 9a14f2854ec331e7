"""Hostile service: its namespace holds callables it must never expose as ops (DESIGN §10).

Only ``health``, ``own`` and ``own_async`` are defined here; everything else is imported, a
builtin, a partial, a callable instance, a class or a module. ``run`` with a dict payload would
run the command its keys name (``{"touch": 1, "/tmp/x": 2}`` runs ``touch /tmp/x``).
"""

import functools
import os  # noqa: F401
from builtins import eval, open  # noqa: A004, F401, UP029
from os import system  # noqa: F401
from subprocess import run  # noqa: F401

from ops_helpers import shared  # noqa: F401


def health(p: dict) -> dict:
    return {"status": "ok"}


def own(p: dict) -> dict:
    return {"own": True}


async def own_async(p: dict) -> dict:
    return {"own_async": True}


class Tool:
    """A class (callable, never an op); its instances are callable too."""

    def __call__(self, p: dict) -> dict:
        return {"instance": True}


instance = Tool()
partial = functools.partial(own)
