"""Op resolution and invocation rules, for every mode of the bridge.

This file is the **one** implementation of what an op is. The process modes import it
(``python -m cerebros_service --bridge-op OP`` and ``--serve-stdio``); the in-process mode
loads this very file's source under a private module name (so it works for any service
module, even where ``cerebros_service`` is not importable). It must therefore import the
standard library only.

Rules:

* an op is a **function** (plain or ``async def``) **defined in** the service module: its
  ``__module__`` is the module's name, or, for a package, the name of one of its
  submodules;
* or a callable the module lists by name in ``__bridge_ops__`` (a list of names), which
  is how a module exposes an imported function, a ``functools.partial`` or a callable
  object on purpose;
* nothing else: imported functions, builtins, classes, modules, partials, callable
  instances and other attributes are never ops, nor is any name starting with ``_``;
* op names are Python identifiers; an op takes one ``dict`` and returns one ``dict``
  (an ``async def`` op is awaited) whose keys are all ``str``.

A ``__bridge_ops__`` that is not a list of public names, or that names something the
module lacks or that is not callable, is a ``contract`` error.

Trace context (DESIGN §14): a call the host traces carries a W3C ``traceparent``; while
the op runs it is the current OpenTelemetry context (when ``opentelemetry-api`` is
importable), so a span the op starts joins the host's trace under its
``cerebros.bridge.invoke`` span.
"""

import inspect
import json
import re
import traceback
from types import ModuleType

__all__ = [
    "DECLARATION",
    "OpError",
    "call_op",
    "encode_error",
    "encode_result",
    "enter_trace",
    "exception_error",
    "leave_trace",
    "list_ops",
    "resolve_op",
]


class OpError(Exception):
    """A failure with a bridge error class (``contract``, ``exception``, ...): one of the
    ``error_classes`` of ``vocabulary.json`` (tests/python/test_vocabulary.py checks every
    class this package names)."""

    def __init__(self, error_class: str, message: str, details: dict | None = None) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.message = message
        self.details = dict(details or {})

    def to_dict(self) -> dict:
        """The ``error`` object of a failed result: ``{"class", "message", "details"}``."""
        return {"class": self.error_class, "message": self.message, "details": self.details}

    def __repr__(self) -> str:
        return f"OpError(error_class={self.error_class!r}, message={self.message!r})"


DECLARATION = "__bridge_ops__"


def _module_name(module: ModuleType) -> str:
    return getattr(module, "__name__", repr(module))


def _check_name(name: object, mod: str) -> str:
    if not isinstance(name, str) or not name:
        raise OpError("contract", "op name must be a non-empty string", {"op": name})
    if not name.isidentifier():
        raise OpError("contract", f"op name {name!r} is not a Python identifier", {"op": name})
    if name.startswith("_"):
        raise OpError(
            "contract",
            f'op "{name}" is private: op names starting with "_" are refused',
            {"op": name, "module": mod},
        )
    return name


def _declared_ops(module: ModuleType) -> frozenset:
    """The names the module lists in ``__bridge_ops__`` (none when it has no list)."""
    mod = _module_name(module)
    declared = vars(module).get(DECLARATION)
    if declared is None:
        return frozenset()
    if not isinstance(declared, list | tuple | set | frozenset):
        raise OpError(
            "contract",
            f"{mod}.{DECLARATION} must be a list of op names, got {type(declared).__name__}",
            {"module": mod},
        )
    for name in declared:
        try:
            _check_name(name, mod)
        except OpError as err:
            raise OpError(
                "contract", f"{mod}.{DECLARATION}: {err.message}", {"module": mod}
            ) from None
    return frozenset(declared)


def _defined_in(func: object, mod: str) -> bool:
    """Whether ``func`` is a Python function whose code belongs to module ``mod`` (or to
    a submodule of package ``mod``)."""
    if not inspect.isfunction(func):
        return False
    owner = getattr(func, "__module__", None)
    return isinstance(owner, str) and (owner == mod or owner.startswith(mod + "."))


def _describe(obj: object) -> str:
    """What a refused attribute is, for error messages."""
    if inspect.isclass(obj):
        return "a class"
    if inspect.ismodule(obj):
        return "a module"
    if inspect.isbuiltin(obj):
        return "a builtin function"
    if inspect.isfunction(obj):
        return f"a function imported from {getattr(obj, '__module__', None) or 'elsewhere'}"
    kind = type(obj)
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    return f"a callable object of type {name}" if callable(obj) else f"a value of type {name}"


def resolve_op(module: ModuleType, name: object):
    """Return the op ``name`` of ``module``, or raise ``OpError("contract", ...)``."""
    mod = _module_name(module)
    name = _check_name(name, mod)
    missing = object()
    obj = vars(module).get(name, missing)
    try:
        declared = _declared_ops(module)
    except OpError as err:
        err.details["op"] = name
        raise
    if name in declared:
        if obj is missing:
            raise OpError(
                "contract",
                f'{mod}.{DECLARATION} lists "{name}", but the module has no such attribute',
                {"op": name, "module": mod},
            )
        if not callable(obj):
            raise OpError(
                "contract",
                f'{mod}.{DECLARATION} lists "{name}", but it is {_describe(obj)}, not callable',
                {"op": name, "module": mod},
            )
        return obj
    if obj is missing:
        raise OpError(
            "contract", f'unknown op "{name}" in module {mod}', {"op": name, "module": mod}
        )
    if not _defined_in(obj, mod):
        raise OpError(
            "contract",
            f'"{name}" in module {mod} is {_describe(obj)}, not an op: ops are the functions '
            f"defined in {mod} and the callables listed in its {DECLARATION}",
            {"op": name, "module": mod},
        )
    return obj


def list_ops(module: ModuleType) -> dict:
    """The ops ``module`` exposes, sorted, and what is wrong with its ``__bridge_ops__``:
    ``{"ops": [...], "problems": [...]}`` (a malformed list leaves no op at all)."""
    problems = []
    try:
        declared = _declared_ops(module)
    except OpError as err:
        problems.append(err.message)
        declared = frozenset()
    ops = []
    for name in sorted({name for name in vars(module) if isinstance(name, str)} | declared):
        try:
            resolve_op(module, name)
        except OpError as err:
            if name in declared:
                problems.append(err.message)
            continue
        ops.append(name)
    return {"ops": ops, "problems": problems}


async def _await(awaitable):
    return await awaitable


# -- trace context ----------------------------------------------------------------------------

#: The variable a ``subprocess`` call's ``traceparent`` arrives in.
TRACEPARENT_ENV = "TRACEPARENT"
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
# (opentelemetry.context, a W3C propagator) once imported; False where it is not installed.
_otel: tuple | bool | None = None


def _otel_parts() -> tuple | None:
    global _otel
    if _otel is None:
        try:  # optional: only traced calls pay for the import
            from opentelemetry import context
            from opentelemetry.trace.propagation.tracecontext import (
                TraceContextTextMapPropagator,
            )

            _otel = (context, TraceContextTextMapPropagator())
        except ImportError:
            _otel = False
    return _otel or None


def enter_trace(traceparent: object) -> object:
    """Make ``traceparent`` (W3C) the current OpenTelemetry context; returns the token
    for :func:`leave_trace` (``None``: nothing entered: no or malformed traceparent, or
    ``opentelemetry-api`` not installed)."""
    if not isinstance(traceparent, str) or not _TRACEPARENT.match(traceparent):
        return None
    parts = _otel_parts()
    if parts is None:
        return None
    context, propagator = parts
    return context.attach(propagator.extract({"traceparent": traceparent}))


def leave_trace(token: object) -> None:
    """Restore the context :func:`enter_trace` replaced."""
    parts = _otel_parts() if token is not None else None
    if parts is not None:
        parts[0].detach(token)


def call_op(
    module: ModuleType,
    name: str,
    payload: object,
    resolved: dict | None = None,
    traceparent: str | None = None,
) -> dict:
    """Resolve and run one op: check the payload, await coroutines, check the result.

    Raises ``OpError`` with class ``contract`` for refused ops or a non-dict payload,
    ``parse_error`` for a non-dict result, and ``exception`` when the op raised; an
    ``OpError`` the op raises itself keeps its class (as in the in-process mode).
    ``resolved`` (op name -> function), when given, keeps the ops already resolved in
    ``module`` for the next calls (a serving child's, like an in-process worker's).
    ``traceparent`` is the call's trace context (see :func:`enter_trace`).
    """
    func = resolved.get(name) if resolved is not None else None
    if func is None:
        func = resolve_op(module, name)
        if resolved is not None:
            resolved[name] = func
    if not isinstance(payload, dict):
        raise OpError(
            "contract",
            f'op "{name}" takes a dict payload, got {type(payload).__name__}',
            {"op": name},
        )
    token = enter_trace(traceparent)
    try:
        result = func(payload)
        if type(result) is not dict and inspect.isawaitable(result):  # a dict never is
            import asyncio  # only async ops pay for it (~35 ms of a process's start-up)

            awaitable = result if inspect.iscoroutine(result) else _await(result)
            result = asyncio.run(awaitable)
    except OpError:
        raise
    except BaseException as exc:  # SystemExit, KeyboardInterrupt too: as in every mode
        raise exception_error(name, exc) from exc
    finally:
        leave_trace(token)
    if not isinstance(result, dict):
        raise OpError(
            "parse_error",
            f'op "{name}" returned {type(result).__name__}, expected dict',
            {"op": name, "type": type(result).__name__},
        )
    return result


def exception_error(name: str, exc: BaseException) -> OpError:
    """Wrap an exception raised by op ``name`` as an ``OpError``: ``dependency`` for an
    ``ImportError`` (a package missing from the venv), ``exception`` for anything else."""
    kind = type(exc)
    qualname = kind.__qualname__
    if kind.__module__ not in ("builtins", "__main__"):
        qualname = f"{kind.__module__}.{qualname}"
    missing = isinstance(exc, ImportError)
    hint = "; install the package into the venv (make setup)" if missing else ""
    return OpError(
        "dependency" if missing else "exception",
        f"{qualname}: {exc}{hint}",
        {
            "op": name,
            "type": qualname,
            "message": str(exc),
            "traceback": "".join(traceback.format_exception(exc)),
        },
    )


def encode_result(name: str, result: dict) -> str:
    """Encode an op result as strict, ASCII-only JSON, or raise a ``parse_error``.

    NaN and infinities are refused (they are not JSON), as are values that are not JSON-like
    (sets, arbitrary objects), strings holding a lone surrogate (not Unicode text: the host
    could not read the line) and dict keys that are not ``str`` (``json.dumps`` would turn
    ``1`` into ``"1"``, where the in-process mode refuses it). The host checks the rest of
    what JSON text can show: integers beyond 64 bits and nesting deeper than 256 levels.
    """
    try:
        text = json.dumps(result, allow_nan=False)
        if "\\ud" in text:  # a surrogate escape: only a valid pair is Unicode text
            json.dumps(result, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        raise OpError(
            "parse_error",
            f'op "{name}" returned a result that is not JSON-representable: {exc}',
            {"op": name},
        ) from exc
    problem = _non_str_key(result)
    if problem is not None:
        raise OpError("parse_error", problem, {"op": name})
    return text


_CONTAINERS = (dict, list, tuple)
_SCALARS = frozenset({str, int, float, bool, type(None)})


def _non_str_key(result: dict) -> str | None:
    """Where the first dict key that is not a ``str`` is (``result["a"][0] has a key of type
    int: ...``), or None. Call it on a result ``json.dumps`` accepted (so without cycles,
    and shallow enough to recurse)."""
    found = _find_non_str_key(result)
    if found is None:
        return None
    path, kind = found
    where = "".join(
        f"[{json.dumps(key)}]" if isinstance(key, str) else f"[{key}]" for key in reversed(path)
    )
    return f"result{where} has a key of type {kind.__name__}: JSON object keys must be str"


def _find_non_str_key(value) -> tuple[list, type] | None:
    """The path (innermost key first) to the first non-``str`` key in ``value`` and its
    type, or None. The path is built only on the way back from a find; a list of scalars
    is passed over with one C-level look at its item types."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return [], type(key)
            if isinstance(item, _CONTAINERS):
                found = _find_non_str_key(item)
                if found is not None:
                    found[0].append(key)
                    return found
        return None
    if set(map(type, value)) <= _SCALARS:
        return None
    for index, item in enumerate(value):
        if isinstance(item, _CONTAINERS):
            found = _find_non_str_key(item)
            if found is not None:
                found[0].append(index)
                return found
    return None


def encode_error(doc: dict) -> str:
    """Encode a failure document (``{"ok": false, "error": ...}``) as JSON the host can read.

    Values JSON cannot hold become their ``repr``, and a lone surrogate (not Unicode text, e.g.
    in an exception's message) becomes ``?``: the error still reaches its caller.
    """
    text = json.dumps(doc, default=repr)
    if "\\ud" in text:
        text = json.dumps(doc, default=repr, ensure_ascii=False)
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text
