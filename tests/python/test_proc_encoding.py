"""Lone surrogates in what a service child writes (issue 9, item 7).

A lone surrogate is not Unicode text: the host refuses a line holding one, so a result with one
is a ``parse_error`` (as in-process), and an error document has it replaced, so that the error
still reaches its caller and a worker child is never killed for it.
"""

import json
import sys
import types

import pytest

from cerebros_service import __main__ as cli
from cerebros_service._dispatch import OpError, encode_error, encode_result

LONE = chr(0xD800)


def _strict(text: str) -> object:
    """Parse as the host does: UTF-8 text, no lone surrogates."""
    text.encode("utf-8")
    doc = json.loads(text)
    json.dumps(doc, ensure_ascii=False).encode("utf-8")
    return doc


@pytest.mark.parametrize("value", [LONE, "a" + chr(0xDFFF), {"k": [LONE]}])
def test_a_lone_surrogate_in_a_result_is_a_parse_error(value):
    with pytest.raises(OpError) as info:
        encode_result("op", {"s": value})
    assert info.value.error_class == "parse_error"


@pytest.mark.parametrize("text", ["plain", "\U0001f600 astral", "\\ud800 as written text"])
def test_valid_text_that_looks_like_a_surrogate_escape_passes(text):
    assert _strict(encode_result("op", {"s": text})) == {"s": text}


def test_an_error_with_a_lone_surrogate_is_still_readable():
    err = OpError("exception", "bad " + LONE, {"message": LONE})
    doc = _strict(encode_error({"ok": False, "error": err.to_dict()}))
    assert doc["error"]["class"] == "exception"
    assert doc["error"]["message"] == "bad ?"


def test_serve_stdio_answers_a_lone_surrogate_with_parse_error(monkeypatch):
    module = types.ModuleType("proc_surrogate")
    exec("def surrogate(payload):\n    return {'s': chr(0xD800)}\n", module.__dict__)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    line = cli._reply(module, b'{"id": 3, "op": "surrogate", "payload": {}}')
    doc = _strict(line.decode("utf-8"))
    assert doc["id"] == 3
    assert doc["error"]["class"] == "parse_error"
