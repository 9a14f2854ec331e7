"""The serve loop's JSON (``--serve-stdio``): orjson where it gives exactly the standard
library's answer, the standard library everywhere else.

``orjson`` parses a request line ~4× and writes a result ~20× faster than ``json``, which
is most of what a ``worker_process`` child spends per call. It is a dependency of the
package; without it (a service venv that lacks it) every line takes the standard path.
Each function answers *nothing* (``None``) where orjson could differ from ``json`` and the
caller then uses the standard path, so the bytes may differ in spacing but never the value
nor the verdict:

* reading: whatever orjson refuses (``NaN`` literals, lone surrogates, other encodings)
  goes to ``json.loads``. The one value both accept but read differently, an integer beyond
  64 bits (a float to orjson), is never in a request: the host refuses such payloads before
  it sends them (``core::payload``), and its JSON values cannot hold one;
* writing: a result orjson can write and ``marshal`` can too (``marshal`` takes exact
  built-in types only, so no UUID, enum, date, dataclass or subclass, which orjson writes
  and the standard path refuses) and whose text holds no ``null`` (orjson writes ``NaN``
  and infinities as ``null``) is written by orjson; everything else, a non-``str`` key or
  an integer beyond 64 bits included, goes through ``_dispatch.encode_result`` and its
  errors. A result holding ``None`` therefore takes the standard path: same answer,
  slower.
"""

import json
import marshal

try:
    import orjson
except ImportError:  # pragma: no cover - the package depends on it; a bare venv may not
    orjson = None  # type: ignore[assignment]

__all__ = ["dumps_result", "loads_request"]


def loads_request(line: bytes) -> object:
    """``json.loads(line)`` for a line the host wrote: the same value, or the same
    ``ValueError``."""
    if orjson is not None:
        try:
            return orjson.loads(line)
        except orjson.JSONDecodeError:
            pass  # the standard parser gives the verdict, and its message
    return json.loads(line)


def dumps_result(result: object) -> bytes | None:
    """An op's result as JSON bytes, or ``None`` when the standard path must decide
    (see the module docstring)."""
    if orjson is None or type(result) is not dict:
        return None
    try:
        # orjson first: it refuses cycles and nesting beyond 255 levels before marshal
        # recurses, non-str keys, integers beyond 64 bits and lone surrogates.
        text = orjson.dumps(result)
        # marshal writes exact built-in types only: anything orjson wrote that the
        # standard path refuses (UUIDs, enums, dates, dataclasses, subclasses) fails here.
        marshal.dumps(result)
    except (TypeError, ValueError):  # orjson.JSONEncodeError is a TypeError
        return None
    # A float that is not finite is the only way orjson writes a `null` it was not given;
    # a result with a `null` in its text takes the standard path.
    return None if b"null" in text else text
