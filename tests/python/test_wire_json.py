"""The serve loop's JSON (``cerebros_service._wire_json``): orjson's fast path must give
exactly the standard library's value and verdict, or step aside."""

import dataclasses
import datetime
import enum
import json
import math
import uuid
from collections import OrderedDict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cerebros_service import _wire_json
from cerebros_service._dispatch import OpError, encode_result
from cerebros_service._wire_json import dumps_result, loads_request
from json_strategies import json_objects, json_values

# The host writes no integer beyond 64 bits (see _wire_json's docstring).
host_values = json_values(st.integers(min_value=-(2**63), max_value=2**64 - 1))


@given(json_objects(json_values()))
def test_a_written_result_reads_back_as_the_standard_path_writes_it(result):
    text = dumps_result(result)
    if text is not None:
        assert b"null" not in text
        assert json.loads(text) == json.loads(encode_result("echo", result)) == result


def test_a_plain_result_takes_the_fast_path():
    result = {"a": [1, 2.5, "é", True, {"b": (3, 4)}], "n": 2**64 - 1}
    text = dumps_result(result)
    assert text is not None
    assert json.loads(text) == {"a": [1, 2.5, "é", True, {"b": [3, 4]}], "n": 2**64 - 1}


class _Colour(enum.Enum):
    RED = 1


class _Size(enum.IntEnum):
    SMALL = 1


class _Name(str):
    pass


class _Mapping(dict):
    pass


@dataclasses.dataclass
class _Point:
    x: int


def _cycle() -> dict:
    loop: dict = {}
    loop["self"] = loop
    return loop


def _nested(depth: int) -> dict:
    inner: list = []
    for _ in range(depth):
        inner = [inner]
    return {"deep": inner}


@pytest.mark.parametrize(
    "result",
    [
        {"u": uuid.UUID(int=1)},  # orjson writes a string
        {"e": _Colour.RED},  # orjson writes its value
        {"e": _Size.SMALL},
        {"s": _Name("x")},
        {"m": _Mapping(a=1)},
        OrderedDict(a=1),
        {"d": datetime.date(2026, 1, 2)},  # orjson writes ISO text
        {"t": datetime.datetime(2026, 1, 2, 3, 4)},
        {"p": _Point(1)},  # orjson writes an object
        {"x": float("nan")},  # orjson writes null
        {"x": [float("inf")]},
        {"none": None},  # a null: the standard path decides
        {1: "non-str key"},
        {"big": 2**64},
        {"small": -(2**63) - 1},
        {"s": "\ud800"},
        {"set": {1, 2}},
        {"b": b"bytes"},
        {"c": 1j},
        _cycle(),
        _nested(300),
    ],
    ids=repr,
)
def test_what_orjson_would_write_differently_or_not_at_all_takes_the_standard_path(result):
    assert dumps_result(result) is None


@pytest.mark.parametrize(
    ("result", "verdict"),
    [
        ({"u": uuid.UUID(int=1)}, "not JSON-representable"),
        ({"e": _Colour.RED}, "not JSON-representable"),
        ({"x": float("nan")}, "not JSON-representable"),
        ({"nested": [{1: "one"}]}, 'result["nested"][0] has a key of type int'),
    ],
)
def test_the_standard_path_still_refuses_what_the_fast_path_passes_on(result, verdict):
    with pytest.raises(OpError, match=verdict.replace("[", r"\[")) as err:
        encode_result("op", result)
    assert err.value.error_class == "parse_error"


@given(host_values)
def test_a_request_reads_as_the_standard_parser_reads_it(value):
    line = json.dumps({"id": 1, "op": "echo", "payload": value}).encode()
    assert loads_request(line) == json.loads(line)
    unicode_line = json.dumps({"payload": value}, ensure_ascii=False).encode()
    assert loads_request(unicode_line) == json.loads(unicode_line)


@pytest.mark.parametrize(
    "line",
    [b'{"x": NaN}', b'{"x": -Infinity}', b'{"s": "\\ud800"}', b"[1e400]"],
)
def test_what_orjson_refuses_to_read_the_standard_parser_reads(line):
    value = loads_request(line)
    assert json.dumps(value) == json.dumps(json.loads(line))


@pytest.mark.parametrize("line", [b"", b"{", b'{"a": 1} x', b"\xff\xfe{}", b'{"a": 01}'])
def test_a_line_that_is_not_json_raises_the_standard_error(line):
    with pytest.raises(ValueError) as ours:
        loads_request(line)
    with pytest.raises(ValueError) as standard:
        json.loads(line)
    assert str(ours.value) == str(standard.value)


def test_without_orjson_everything_takes_the_standard_path(monkeypatch):
    monkeypatch.setattr(_wire_json, "orjson", None)
    assert dumps_result({"a": 1}) is None
    assert loads_request(b'{"a": [1, 2.5]}') == {"a": [1, 2.5]}
    assert math.isnan(loads_request(b'{"x": NaN}')["x"])
