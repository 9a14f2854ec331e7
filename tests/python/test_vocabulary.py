"""One vocabulary for both languages: every error class, contract name and status the Python
side names is one of ``python/cerebros_service/vocabulary.json``, the list the Rust types are
checked against (``tests/vocabulary.rs``). A name changed on one side alone fails here or
there.

The service names error classes as literals (``OpError("contract", ...)``: ``_dispatch`` runs
alone in the in-process mode and cannot import the list), so they are read from the source.
"""

import ast
import importlib
from collections.abc import Iterator
from pathlib import Path

from cerebros_service.vocabulary import (
    CONTRACTS,
    DIRECTIONS,
    ERROR_CLASSES,
    RUN_STATUSES,
    TRIAL_STATUSES,
)

PACKAGE_DIR = Path(__file__).resolve().parents[2] / "python" / "cerebros_service"
#: (path in the package, syntax tree) of each Python source of the service.
TREES = [
    (path.relative_to(PACKAGE_DIR).as_posix(), ast.parse(path.read_text("utf-8")))
    for path in sorted(PACKAGE_DIR.rglob("*.py"))
]


def _strings(node: ast.AST) -> set[str]:
    """Every string constant in ``node`` (``"a" if x else "b"`` gives both)."""
    return {
        n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }


def _called(node: ast.AST, name: str) -> bool:
    func = node.func if isinstance(node, ast.Call) else None
    return (isinstance(func, ast.Name) and func.id == name) or (
        isinstance(func, ast.Attribute) and func.attr == name
    )


def _class_names() -> Iterator[tuple[str, str]]:
    """(file, class) for each error class the service names: the first argument of
    ``OpError(...)`` and the right side of ``... .error_class == ...``."""
    for where, tree in TREES:
        for node in ast.walk(tree):
            if _called(node, "OpError") and node.args:
                yield from ((where, s) for s in _strings(node.args[0]))
            elif (
                isinstance(node, ast.Compare)
                and isinstance(node.left, ast.Attribute)
                and node.left.attr == "error_class"
            ):
                yield from ((where, s) for c in node.comparators for s in _strings(c))


def _contract_dicts() -> Iterator[tuple[str, dict[str, ast.AST]]]:
    """(file, {key: value node}) for each dict display with a constant ``"contract"`` key."""
    for where, tree in TREES:
        for node in ast.walk(tree):
            if isinstance(node, ast.Dict):
                keys = [k.value if isinstance(k, ast.Constant) else None for k in node.keys]
                if "contract" in keys:
                    yield where, dict(zip(keys, node.values, strict=True))


def test_every_error_class_the_service_names_is_listed() -> None:
    named = set(_class_names())
    assert {cls for _, cls in named} >= {"contract", "exception", "parse_error", "dependency"}
    assert sorted((w, c) for w, c in named if c not in ERROR_CLASSES) == []


def test_every_contract_the_service_names_is_listed() -> None:
    named = set()
    for where, tree in TREES:
        for node in ast.walk(tree):
            if _called(node, "check_contract_tag") and len(node.args) > 1:
                named |= {(where, s) for s in _strings(node.args[1])}
    for where, fields in _contract_dicts():
        named |= {(where, s) for s in _strings(fields["contract"])}
    assert {c for _, c in named} >= {"run_started", "trial_reported"}
    assert sorted((w, c) for w, c in named if c not in CONTRACTS) == []


def test_every_status_a_reported_contract_carries_is_listed() -> None:
    allowed = {"trial_reported": TRIAL_STATUSES, "run_finalized": RUN_STATUSES}
    checked = 0
    for where, fields in _contract_dicts():
        contract = _strings(fields["contract"])
        for name in contract & allowed.keys():
            if "status" in fields:
                checked += 1
                statuses = _strings(fields["status"])
                assert statuses <= set(allowed[name]), (where, name, statuses)
    assert checked > 0


def test_the_mlflow_run_states_are_run_or_trial_statuses() -> None:
    mlflow_sync = importlib.import_module("cerebros_service.mlflow_sync")
    assert set(mlflow_sync._RUN_STATUS) <= set(RUN_STATUSES) | set(TRIAL_STATUSES)
    assert "pruned" in mlflow_sync._RUN_STATUS


def test_the_type_stubs_list_the_error_classes() -> None:
    stub = ast.parse((PACKAGE_DIR / "_bridge.pyi").read_text("utf-8"))
    (alias,) = (
        node.value
        for node in stub.body
        if isinstance(node, ast.AnnAssign)
        and isinstance(node.target, ast.Name)
        and node.target.id == "_ErrorClass"
    )
    assert isinstance(alias, ast.Subscript)
    listed = [e.value for e in alias.slice.elts]  # type: ignore[attr-defined]
    assert listed == list(ERROR_CLASSES)


def test_the_native_module_maps_each_listed_class() -> None:
    from cerebros_service import _bridge  # built by `make setup`

    assert list(_bridge.ERROR_CLASSES) == list(ERROR_CLASSES)
    for name, exc_type in _bridge.ERROR_CLASSES.items():
        assert exc_type.error_class == name


def test_each_objective_names_a_listed_direction() -> None:
    from cerebros_service.nas.rules import RULES

    assert {rule["direction"] for rule in RULES["objectives"].values()} <= set(DIRECTIONS)
