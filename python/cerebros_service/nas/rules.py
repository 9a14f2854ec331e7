"""The checked values of a run spec, from the one table Rust and Python both read.

``spec_rules.json`` (beside this module) lists, per section of a spec (``search_space``,
``budget``, ``dataset_options``), each key's kind, bounds and default, the activations the
trainer implements, the search-space pairs that must be ordered and the scikit-learn
datasets. The host (``src/spec/rules.rs``) embeds the same file, so a spec the CLI accepts is
one the service accepts; ``tests/fixtures/spec_cases.json`` holds the good and bad values
both languages are tested against.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._dispatch import OpError
from .checks import as_int, as_number, contract_error

__all__ = ["ACTIVATIONS", "OBJECTIVES", "RULES", "SKLEARN_TASKS", "check_section", "defaults"]

#: The whole table.
RULES: dict[str, Any] = json.loads(
    (Path(__file__).with_name("spec_rules.json")).read_text(encoding="utf-8")
)

#: Activations the trainer implements.
ACTIVATIONS: tuple[str, ...] = tuple(RULES["activations"])

#: objective -> (the task it needs, or None for either; its natural direction)
OBJECTIVES: dict[str, tuple[str | None, str]] = {
    name: (rule["task"], rule["direction"]) for name, rule in RULES["objectives"].items()
}

#: The task of each ``sklearn:`` dataset.
SKLEARN_TASKS: dict[str, str] = dict(RULES["sklearn_datasets"])


def defaults(section: str) -> dict[str, Any]:
    """The default value of every key of ``section`` that has one."""
    rules = RULES[section].items()
    return {key: copy.deepcopy(rule["default"]) for key, rule in rules if "default" in rule}


def check_section(section: str, raw: Mapping[str, Any] | None, prefix: str) -> dict[str, Any]:
    """Validate the table ``raw`` of ``section`` and return it normalised, defaults filled.

    A ``None`` value counts as absent. Raises ``OpError("contract", ...)`` naming the key
    (``{prefix}.{key}``) for an unknown key, a value of the wrong kind or out of bounds, and
    a minimum above its maximum.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise contract_error(prefix, f"must be a table/object, got {type(raw).__name__}")
    rules = RULES[section]
    unknown = sorted(str(k) for k in raw if k not in rules)
    if unknown:
        raise contract_error(f"{prefix}.{unknown[0]}", f"unknown key (known: {', '.join(rules)})")
    result = defaults(section)
    for key, rule in rules.items():
        value = raw.get(key)
        if value is not None:
            result[key] = check_value(rule, value, f"{prefix}.{key}")
    for low_key, high_key in RULES["ordered"]:
        if low_key in rules and result[low_key] > result[high_key]:
            raise contract_error(
                f"{prefix}.{low_key}",
                f"must not exceed {prefix}.{high_key} ({result[low_key]} > {result[high_key]})",
            )
    return result


def check_value(rule: Mapping[str, Any], value: Any, key: str) -> Any:
    """``value`` checked against one rule of the table, normalised."""
    kind = rule["kind"]
    if kind == "integer":
        return as_int(value, key, minimum=rule.get("minimum"), maximum=rule.get("maximum"))
    if kind == "number":
        return _bounded(as_number(value, key), rule, key)
    if kind == "string":
        if not isinstance(value, str) or not value:
            raise contract_error(key, f"must be a non-empty string, got {value!r}")
        return value
    if kind == "choice":
        if value not in rule["values"]:
            raise contract_error(key, f"must be one of {', '.join(rule['values'])}, got {value!r}")
        return value
    if kind == "activations":
        return _activations(value, key)
    if kind == "range":
        return _range(value, rule, key)
    raise ValueError(f"spec_rules.json: unknown kind {kind!r} for {key}")


def _bounded(number: float, rule: Mapping[str, Any], key: str) -> float:
    low, high = rule.get("minimum"), rule.get("maximum")
    low_x, high_x = rule.get("exclusive_minimum"), rule.get("exclusive_maximum")
    if (
        (low is not None and number < low)
        or (high is not None and number > high)
        or (low_x is not None and number <= low_x)
        or (high_x is not None and number >= high_x)
    ):
        raise contract_error(key, f"must be {_describe(rule)}, got {number!r}")
    return number


def _describe(rule: Mapping[str, Any]) -> str:
    """The interval a number must lie in: ``in [0, 1]``, ``in (0, 1)``, ``at least 1``."""
    low = rule.get("minimum", rule.get("exclusive_minimum"))
    high = rule.get("maximum", rule.get("exclusive_maximum"))
    if low is not None and high is not None:
        left = "[" if "minimum" in rule else "("
        right = "]" if "maximum" in rule else ")"
        return f"in {left}{low}, {high}{right}"
    if low is not None:
        return f"at least {low}" if "minimum" in rule else f"greater than {low}"
    return f"at most {high}" if "maximum" in rule else f"less than {high}"


def _activations(value: Any, key: str) -> list[str]:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list | tuple) or not names:
        raise contract_error(
            key, f"must be an activation name or a non-empty list of them, got {value!r}"
        )
    result: list[str] = []
    for name in names:
        if not isinstance(name, str) or name.strip().lower() not in ACTIVATIONS:
            raise contract_error(
                key, f"unsupported activation {name!r} (supported: {', '.join(ACTIVATIONS)})"
            )
        name = name.strip().lower()
        if name not in result:
            result.append(name)
    return result


def _range(value: Any, rule: Mapping[str, Any], key: str) -> list[float]:
    """A ``[low, high]`` pair with ``low <= high``, both within the rule's interval."""
    if isinstance(value, str) or not isinstance(value, list | tuple) or len(value) != 2:
        raise contract_error(key, f"must be a [low, high] pair, got {value!r}")
    low, high = (as_number(v, key) for v in value)
    if low > high:
        raise contract_error(key, f"must satisfy low <= high, got [{low!r}, {high!r}]")
    for name, number in (("low", low), ("high", high)):
        try:
            _bounded(number, rule, key)
        except OpError:
            raise contract_error(
                key, f"{name} must be {_describe(rule)}, got [{low!r}, {high!r}]"
            ) from None
    return [low, high]
