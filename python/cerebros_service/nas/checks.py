"""Validation helpers for op payloads: every failure is ``OpError("contract", ...)``.

Messages name the offending key with its full path (``search_space.minimum_levels``) and the
same path is put in the error's ``details["key"]``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .._dispatch import OpError

__all__ = [
    "contract_error",
    "check_contract_tag",
    "opt_mapping",
    "req_str",
    "opt_str",
    "as_int",
    "as_number",
    "as_seed",
]


def contract_error(key: str, message: str, **details: Any) -> OpError:
    """An ``OpError("contract", ...)`` whose message starts with ``key``."""
    return OpError("contract", f"{key}: {message}", {"key": key, **details})


def check_contract_tag(payload: Mapping[str, Any], contract: str) -> None:
    """Refuse a payload that names another contract or version (absent tags are accepted)."""
    tag = payload.get("contract")
    if tag is not None and tag != contract:
        raise contract_error(
            "contract", f"expected contract {contract!r} version 1, got {tag!r}", got=tag
        )
    version = payload.get("version")
    if version is not None and (isinstance(version, bool) or version != 1):
        raise contract_error(
            "version", f"expected contract {contract!r} version 1, got version {version!r}"
        )


def opt_mapping(payload: Mapping[str, Any], key: str, path: str | None = None) -> dict:
    """``payload[key]`` as a dict; absent or ``None`` gives ``{}``."""
    value = payload.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise contract_error(path or key, f"must be a table/object, got {type(value).__name__}")
    return dict(value)


def req_str(payload: Mapping[str, Any], key: str, path: str | None = None) -> str:
    """A required non-empty string."""
    value = payload.get(key)
    if value is None:
        raise contract_error(path or key, "is required")
    if not isinstance(value, str) or not value:
        raise contract_error(path or key, f"must be a non-empty string, got {value!r}")
    return value


def opt_str(payload: Mapping[str, Any], key: str, path: str | None = None) -> str | None:
    """An optional non-empty string (``None`` when absent)."""
    if payload.get(key) is None:
        return None
    return req_str(payload, key, path)


def as_int(value: Any, key: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer (an integral float is accepted), optionally bounded; never a bool."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise contract_error(key, f"must be an integer, got {value!r}")
    if isinstance(value, float):
        if not value.is_integer():
            raise contract_error(key, f"must be an integer, got {value!r}")
        value = int(value)
    if minimum is not None and value < minimum:
        raise contract_error(key, f"must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise contract_error(key, f"must be at most {maximum}, got {value}")
    return value


def as_number(value: Any, key: str) -> float:
    """A finite number (int or float, never a bool)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise contract_error(key, f"must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise contract_error(key, f"must be finite, got {value!r}")
    return value


def as_seed(value: Any, key: str) -> int:
    """A seed: an integer in [0, 2**64)."""
    if value is None:
        raise contract_error(key, "is required")
    return as_int(value, key, minimum=0, maximum=2**64 - 1)
