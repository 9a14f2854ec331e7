"""Command line of the service: ``python -m cerebros_service --bridge-op OP``.

The payload is a JSON object read from stdin, or from ``CEREBROS_BRIDGE_PAYLOAD`` when stdin
is empty (an empty payload is ``{}``). The op's result is printed to stdout as one line of
JSON. On failure stdout gets ``{"ok": false, "error": {"class", "message", "details"}}`` and
the exit status is 2 for a ``contract`` error, 1 otherwise. While the op runs, anything it
writes to stdout (from Python or C) goes to stderr, so stdout carries the result only.
"""

import argparse
import contextlib
import json
import os
import sys

import cerebros_service

from ._dispatch import OpError, call_op, encode_result

PAYLOAD_ENV = "CEREBROS_BRIDGE_PAYLOAD"
EXIT_CONTRACT = 2
EXIT_FAILURE = 1


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


def run_op(op: str) -> int:
    """Run one op as the CLI does; print the result or the error; return the exit status."""
    try:
        payload = _read_payload()
        with _stdout_to_stderr():
            result = call_op(cerebros_service, op, payload)
        line = encode_result(op, result)
    except OpError as err:
        if err.error_class == "contract":
            err.details.setdefault("op", op)
        print(json.dumps({"ok": False, "error": err.to_dict()}, default=repr), flush=True)
        return EXIT_CONTRACT if err.error_class == "contract" else EXIT_FAILURE
    print(line, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cerebros_service", description="Run one cerebros_service op."
    )
    parser.add_argument(
        "--bridge-op",
        metavar="OP",
        required=True,
        help="the op to call; payload JSON on stdin or in " + PAYLOAD_ENV,
    )
    args = parser.parse_args(argv)
    return run_op(args.bridge_op)


if __name__ == "__main__":
    sys.exit(main())
