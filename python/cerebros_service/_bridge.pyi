"""Type stubs of ``cerebros_service._bridge``, the native module built from ``src/python_api``.

``Bridge`` runs ops of a Python service module through the Rust bridge (the same client, pool,
contracts and error model as the ``cerebros-bridge`` CLI). Every failure raises a subclass of
``BridgeError``; ``ERROR_CLASSES`` maps each error class name to its exception type.
"""

from collections.abc import Mapping
from os import PathLike
from types import TracebackType
from typing import Any, Final, Literal, NoReturn, Self, TypeAlias, final

__all__ = [
    "__version__",
    "SWITCH_INTERVAL_S",
    "Bridge",
    "BridgeError",
    "DependencyError",
    "ConfigError",
    "ContractError",
    "CallTimeoutError",
    "OpExceptionError",
    "SubprocessExitError",
    "ParseError",
    "BridgeSystemError",
    "OverloadedError",
    "CallCancelledError",
    "ERROR_CLASSES",
    "validate_contract",
    "contract_schema",
]

_Mode: TypeAlias = Literal["in_process", "worker_process", "subprocess"]
_ErrorClass: TypeAlias = Literal[
    "dependency",
    "config",
    "contract",
    "timeout",
    "exception",
    "subprocess_exit",
    "parse_error",
    "system_error",
    "overloaded",
    "cancelled",
]

__version__: Final[str]
SWITCH_INTERVAL_S: Final[float]
"""The interpreter switch interval (seconds) the first in-process ``Bridge`` sets."""

class BridgeError(Exception):
    """Base of every error the bridge raises."""

    error_class: str
    """The error class: ``dependency``, ``config``, ``contract``, ``timeout``, ...."""
    message: str
    """The one-line description (``str(err)`` adds the class, op and attempt)."""
    details: dict[str, Any]
    """Class-specific details: ``type``/``message``/``traceback``, ``timeout_ms``, ...."""
    op: str | None
    """The op being called, where known."""
    attempt: int
    """The 1-based attempt that failed (0 when no attempt was made)."""
    run_id: str | None
    """The payload's ``run_id``, where known."""

class DependencyError(BridgeError):
    """``dependency``: the bridge is disabled, or a module or package is missing."""

class ConfigError(BridgeError):
    """``config``: an invalid configuration file, value or argument."""

class ContractError(BridgeError):
    """``contract``: invalid input (payload, contract, op name, size)."""

class CallTimeoutError(BridgeError):
    """``timeout``: no reply before the deadline (not the builtin ``TimeoutError``)."""

class OpExceptionError(BridgeError):
    """``exception``: the Python op raised (details: ``type``, ``message``, ``traceback``)."""

class SubprocessExitError(BridgeError):
    """``subprocess_exit``: the worker process exited or was killed."""

class ParseError(BridgeError):
    """``parse_error``: the op's result is not a dict of JSON-like values."""

class BridgeSystemError(BridgeError):
    """``system_error``: the bridge itself failed (not the builtin ``SystemError``)."""

class OverloadedError(BridgeError):
    """``overloaded``: the request queue is full."""

class CallCancelledError(BridgeError):
    """``cancelled``: cancelled by shutdown, or the bridge is closed."""

ERROR_CLASSES: Final[dict[str, type[BridgeError]]]
"""Error class name -> exception type."""

@final
class Bridge:
    """A bridge client; ``None`` arguments keep the configured value (file, env, defaults)."""

    def __new__(
        cls,
        config: str | PathLike[str] | None = None,
        module: str | None = None,
        repo_path: str | PathLike[str] | None = None,
        mode: _Mode | None = None,
        pool_size: int | None = None,
        timeout_ms: int | None = None,
        max_retries: int | None = None,
    ) -> Self: ...
    def call(
        self,
        op: str,
        payload: Mapping[str, Any],
        timeout_ms: int | None = None,
        *,
        cache_key: str | None = None,
        max_retries: int | None = None,
    ) -> dict[str, Any]:
        """Call ``op`` with ``payload``; the GIL is released while the call runs."""

    def stats(self) -> dict[str, Any]:
        """Counters and worker state (``calls``, ``errors``, ``workers_alive``, ...)."""

    def close(self) -> None:
        """Stop the bridge: no new calls; running ones get the cancel grace. Idempotent."""

    @property
    def closed(self) -> bool: ...
    @property
    def mode(self) -> _Mode: ...
    @property
    def module(self) -> str: ...
    @property
    def pool_size(self) -> int: ...
    @property
    def timeout_ms(self) -> int: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> bool: ...

def validate_contract(contract: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a version-1 contract; return it normalised, or raise ``ContractError``."""

def contract_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the version-1 contracts, from the Rust types."""

def _raise_bridge_error(
    error_class: _ErrorClass,
    message: str,
    details: Mapping[str, Any] | None = None,
    op: str | None = None,
    attempt: int = 0,
    run_id: str | None = None,
) -> NoReturn: ...
def _close_all() -> None: ...
