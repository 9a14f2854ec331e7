"""Command line of the service, used by the bridge's process modes.

``python -m cerebros_service --bridge-op OP [--module NAME]`` runs one op (``subprocess``
mode). The payload is a JSON object read from stdin, or from ``CEREBROS_BRIDGE_PAYLOAD`` when
stdin is empty (an empty payload is ``{}``). The op's result is printed to stdout as one line
of JSON. On failure stdout gets ``{"ok": false, "error": {"class", "message", "details"}}``
and the exit status is 2 for a ``contract`` error, 1 otherwise. While the op runs, anything
it writes to stdout (from Python or C) goes to stderr, so stdout carries the result only.
The process ends as soon as the reply is written: threads an op left running (daemon or
not) do not keep it alive, as they would not delay the reply in the other modes.

``python -m cerebros_service --serve-stdio [--module NAME]`` serves ops until stdin closes
(``worker_process`` mode), one JSON document per line each way::

    -> {"id": 7, "op": "echo", "payload": {...}}
    -> {"id": 8, "op": "echo", "payload": {...}, "traceparent": "00-…-…-01"}
    <- {"id": 7, "ok": true, "result": {...}}
    <- {"id": 7, "ok": false, "error": {"class", "message", "details"}}

Requests are answered one at a time, in the order they arrive; a client may send several
before reading the replies. Once the module is imported the server says so with the reply
``{"id": 0, "ok": true, "result": {"ready": true, "pid", "module"}}`` (or an ``id`` 0 error
of class ``dependency``, after which it exits). A line that is not a request gets a
``contract`` error reply (with the request's ``id`` when one can be read, else ``null``) and
the loop goes on. The protocol uses private copies of fds 0 and 1: fd 1 and ``sys.stdout``
point at stderr and fd 0 at ``/dev/null``, so what ops print, and child processes they start,
cannot corrupt or steal the stream.

A traced call's W3C trace context arrives as the request's ``traceparent`` (``--serve-stdio``)
or in the ``TRACEPARENT`` variable (``--bridge-op``); see ``cerebros_service._dispatch``.

``--module NAME`` (default ``cerebros_service``) picks the service module; the op rules are the
same for any module (see ``cerebros_service._dispatch``).
"""

import argparse
import atexit
import contextlib
import importlib
import json
import os
import sys
from types import ModuleType
from typing import BinaryIO

from ._dispatch import TRACEPARENT_ENV, OpError, call_op, encode_error, encode_result
from ._wire_json import dumps_result, loads_request

PAYLOAD_ENV = "CEREBROS_BRIDGE_PAYLOAD"
DEFAULT_MODULE = "cerebros_service"
EXIT_CONTRACT = 2
EXIT_FAILURE = 1
READY_ID = 0
# JSON values a request id cannot be (an id is an integer or a string).
_NOT_AN_ID = (bool, float, dict, list)


def _read_payload() -> object:
    data: bytes | str = b""
    if sys.stdin is not None and not sys.stdin.isatty():
        data = sys.stdin.buffer.read()
    if not data.strip():
        data = os.environ.get(PAYLOAD_ENV, "")
    if not data.strip():
        return {}
    try:
        return json.loads(data)
    except ValueError as exc:
        raise OpError("contract", f"payload is not valid JSON: {exc}") from exc


def load_module(name: str) -> ModuleType:
    """Import the service module, turning any failure into a ``dependency`` ``OpError``."""
    try:
        return importlib.import_module(name)
    except BaseException as exc:  # an import may raise anything, SystemExit included
        kind = type(exc).__qualname__
        raise OpError(
            "dependency",
            f"cannot import service module `{name}`: {kind}: {exc}",
            {"module": name, "type": kind, "sys_path": list(sys.path)},
        ) from exc


@contextlib.contextmanager
def _stdout_to_stderr():
    """Send fd 1 and ``sys.stdout`` to stderr for the duration of the block."""
    sys.stdout.flush()
    saved_fd = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved_fd, 1)
        os.close(saved_fd)


def run_op(op: str, module_name: str = DEFAULT_MODULE) -> int:
    """Run one op as the CLI does; print the result or the error; return the exit status."""
    try:
        payload = _read_payload()
        with _stdout_to_stderr():
            module = load_module(module_name)
            result = call_op(module, op, payload, traceparent=os.environ.get(TRACEPARENT_ENV))
        line = encode_result(op, result)
    except OpError as err:
        if err.error_class == "contract":
            err.details.setdefault("op", op)
        print(encode_error({"ok": False, "error": err.to_dict()}), flush=True)
        return EXIT_CONTRACT if err.error_class == "contract" else EXIT_FAILURE
    print(line, flush=True)
    return 0


# -- --serve-stdio ----------------------------------------------------------------------------


def _error_line(request_id: object, err: OpError) -> bytes:
    doc = {"id": request_id, "ok": False, "error": err.to_dict()}
    return encode_error(doc).encode("utf-8")


def _reply(module: ModuleType, line: bytes, resolved: dict | None = None) -> bytes:
    """The reply line (without its newline) to one request line; ``resolved`` keeps the
    ops resolved by earlier requests (see ``call_op``)."""
    try:
        request = loads_request(line)
    except ValueError as exc:
        return _error_line(None, OpError("contract", f"request is not valid JSON: {exc}"))
    if not isinstance(request, dict):
        kind = type(request).__name__
        return _error_line(None, OpError("contract", f"request must be an object, got {kind}"))
    request_id = request.get("id")
    if request_id is None or isinstance(request_id, _NOT_AN_ID):
        return _error_line(
            None, OpError("contract", "request has no valid id (an integer or a string)")
        )
    op = request.get("op")
    try:
        if not isinstance(op, str):
            raise OpError("contract", "request has no op name (a string)", {"op": op})
        payload = request.get("payload", {})
        traceparent = request.get("traceparent")
        result = call_op(module, op, payload, resolved, traceparent)  # SystemExit too
        text = dumps_result(result) or encode_result(op, result).encode("ascii")
    except OpError as err:
        if err.error_class == "contract":
            err.details.setdefault("op", op)
        return _error_line(request_id, err)
    wire_id = b"%d" % request_id if type(request_id) is int else json.dumps(request_id).encode()
    return b'{"id": %s, "ok": true, "result": %s}' % (wire_id, text)


def _take_protocol_fds() -> tuple[BinaryIO, BinaryIO]:
    """Private copies of fds 0 and 1 for the protocol; fd 0 -> /dev/null, fd 1 -> stderr."""
    sys.stdout.flush()
    proto_in = os.fdopen(os.dup(0), "rb")
    proto_out = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    sys.stdin = open(os.devnull, encoding="utf-8")  # noqa: SIM115  (lives as long as the server)
    return proto_in, proto_out


def serve_stdio(module_name: str = DEFAULT_MODULE) -> int:
    """Serve requests from stdin until it closes; see the module docstring."""
    proto_in, proto_out = _take_protocol_fds()

    def send(line: bytes) -> None:
        proto_out.write(line + b"\n")
        proto_out.flush()

    try:
        module = load_module(module_name)
    except OpError as err:
        send(_error_line(READY_ID, err))
        return EXIT_FAILURE
    ready = {"ready": True, "pid": os.getpid(), "module": module_name}
    send(json.dumps({"id": READY_ID, "ok": True, "result": ready}).encode("ascii"))
    resolved: dict = {}
    while True:
        line = proto_in.readline()
        if not line:
            return 0
        if not line.strip():
            continue
        send(_reply(module, line, resolved))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cerebros_service",
        description="Run one op of a service module, or serve ops over stdin/stdout.",
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--bridge-op",
        metavar="OP",
        help="the op to call; payload JSON on stdin or in " + PAYLOAD_ENV,
    )
    what.add_argument(
        "--serve-stdio",
        action="store_true",
        help="serve newline-delimited JSON requests on stdin until it closes",
    )
    parser.add_argument(
        "--module",
        metavar="NAME",
        default=DEFAULT_MODULE,
        help="the service module whose functions are the ops (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.serve_stdio:
        return serve_stdio(args.module)
    return run_op(args.bridge_op, args.module)


def exit_now(status: int) -> None:
    """End the process with ``status`` once its reply is out: run the ``atexit`` hooks and
    flush, but do not wait for threads an op left running (a call is over when its result
    is written; the bridge kills what is left of its process group)."""
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


if __name__ == "__main__":
    exit_now(main())
