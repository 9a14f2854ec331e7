"""Op resolution and invocation rules, for Python-side callers of a service module.

The Rust bridge applies the same rules when it embeds CPython; this module is what the
process-based modes (``python -m cerebros_service --bridge-op OP`` and
``--serve-stdio``) use, so that every mode refuses and reports the same things.

Rules:

* an op is a module-level function (plain or ``async def``) of the service module;
* it takes one ``dict`` and returns one ``dict`` (an ``async def`` op is awaited);
* op names must be Python identifiers, and names starting with ``_`` are never ops;
* classes, modules and other non-function attributes are never ops.
"""

import inspect
import json
import traceback
from types import ModuleType

__all__ = ["OpError", "call_op", "encode_error", "encode_result", "exception_error", "resolve_op"]


class OpError(Exception):
    """A failure with a bridge error class (``contract``, ``exception``, ...)."""

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


def _module_name(module: ModuleType) -> str:
    return getattr(module, "__name__", repr(module))


def resolve_op(module: ModuleType, name: object):
    """Return the op function ``name`` of ``module``, or raise ``OpError("contract", ...)``."""
    mod = _module_name(module)
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
    missing = object()
    obj = getattr(module, name, missing)
    if obj is missing:
        raise OpError(
            "contract", f'unknown op "{name}" in module {mod}', {"op": name, "module": mod}
        )
    if inspect.isclass(obj) or inspect.ismodule(obj) or not inspect.isroutine(obj):
        kind = "a class" if inspect.isclass(obj) else type(obj).__name__
        if inspect.ismodule(obj):
            kind = "a module"
        raise OpError(
            "contract",
            f'"{name}" in module {mod} is {kind}, not an op function',
            {"op": name, "module": mod},
        )
    return obj


async def _await(awaitable):
    return await awaitable


def call_op(module: ModuleType, name: str, payload: object) -> dict:
    """Resolve and run one op: check the payload, await coroutines, check the result.

    Raises ``OpError`` with class ``contract`` for refused ops or a non-dict payload,
    ``parse_error`` for a non-dict result, and ``exception`` when the op raised; an
    ``OpError`` the op raises itself keeps its class (as in the in-process mode).
    """
    func = resolve_op(module, name)
    if not isinstance(payload, dict):
        raise OpError(
            "contract",
            f'op "{name}" takes a dict payload, got {type(payload).__name__}',
            {"op": name},
        )
    try:
        result = func(payload)
        if inspect.isawaitable(result):
            import asyncio  # only async ops pay for it (~35 ms of a process's start-up)

            awaitable = result if inspect.iscoroutine(result) else _await(result)
            result = asyncio.run(awaitable)
    except OpError:
        raise
    except Exception as exc:
        raise exception_error(name, exc) from exc
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
    (sets, arbitrary objects) and strings holding a lone surrogate (not Unicode text; the
    host could not read the line).
    """
    try:
        text = json.dumps(result, allow_nan=False)
        if "\\ud" in text:  # a surrogate escape: only a valid pair is Unicode text
            json.dumps(result, ensure_ascii=False).encode("utf-8")
        return text
    except (TypeError, ValueError, RecursionError) as exc:
        raise OpError(
            "parse_error",
            f'op "{name}" returned a result that is not JSON-representable: {exc}',
            {"op": name},
        ) from exc


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
