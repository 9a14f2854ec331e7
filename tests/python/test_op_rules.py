"""The op rules of ``cerebros_service._dispatch`` (DESIGN §10): what is an op, what a result
may hold, and how ``SystemExit`` and threads left running are handled."""

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import cerebros_service
from cerebros_service._dispatch import OpError, call_op, encode_result, list_ops, resolve_op

HOSTILE_DIR = Path(__file__).resolve().parents[1] / "hostile" / "services"
if str(HOSTILE_DIR) not in sys.path:
    sys.path.insert(0, str(HOSTILE_DIR))

import ops_bad_declaration  # noqa: E402
import ops_declared  # noqa: E402
import ops_imports  # noqa: E402


def _refusal(module, name) -> OpError:
    with pytest.raises(OpError) as info:
        resolve_op(module, name)
    assert info.value.error_class == "contract"
    assert info.value.details["op"] == name
    return info.value


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("run", "a function imported from subprocess"),
        ("shared", "a function imported from ops_helpers"),
        ("system", "a builtin function"),
        ("open", "a builtin function"),
        ("eval", "a builtin function"),
        ("partial", "a callable object of type functools.partial"),
        ("instance", "a callable object of type ops_imports.Tool"),
        ("Tool", "a class"),
        ("os", "a module"),
    ],
)
def test_only_functions_defined_in_the_module_are_ops(name, kind):
    err = _refusal(ops_imports, name)
    assert err.message.startswith(f'"{name}" in module ops_imports is {kind}, not an op'), (
        err.message
    )
    assert "__bridge_ops__" in err.message


def test_defined_functions_and_async_functions_are_ops():
    assert resolve_op(ops_imports, "own") is ops_imports.own
    assert resolve_op(ops_imports, "own_async") is ops_imports.own_async
    for name in ("health", "echo", "start_run", "run_trial", "record_trial", "finalize_run"):
        assert resolve_op(cerebros_service, name) is getattr(cerebros_service, name)


def test_functions_of_a_packages_submodules_are_ops(tmp_path, monkeypatch):
    package = tmp_path / "ops_rules_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("from json import dumps\nfrom .inner import op\n")
    (package / "inner.py").write_text("def op(p):\n    return {'inner': True}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import ops_rules_pkg

    assert resolve_op(ops_rules_pkg, "op") is ops_rules_pkg.op
    assert "imported from json" in _refusal(ops_rules_pkg, "dumps").message
    assert list_ops(ops_rules_pkg) == {"ops": ["op"], "problems": []}


def test_listed_callables_are_ops():
    for name in ("shared", "tagged", "counter", "own"):
        assert resolve_op(ops_declared, name) is getattr(ops_declared, name)
    _refusal(ops_declared, "run")
    assert call_op(ops_declared, "tagged", {}) == {"tag": "x"}


def test_a_listed_name_the_module_lacks_or_cannot_call_is_refused():
    assert "has no such attribute" in _refusal(ops_bad_declaration, "missing").message
    err = _refusal(ops_bad_declaration, "LIMIT")
    assert err.message == (
        'ops_bad_declaration.__bridge_ops__ lists "LIMIT", but it is a value of type int, '
        "not callable"
    )


@pytest.mark.parametrize(
    ("declared", "fragment"),
    [
        ("own", "must be a list of op names, got str"),
        (["own", 3], "op name must be a non-empty string"),
        (["_own"], 'op "_own" is private'),
    ],
)
def test_a_malformed_declaration_refuses_every_op(monkeypatch, declared, fragment):
    monkeypatch.setattr(ops_declared, "__bridge_ops__", declared)
    err = _refusal(ops_declared, "own")
    assert err.message.startswith("ops_declared.__bridge_ops__"), err.message
    assert fragment in err.message
    listing = list_ops(ops_declared)
    assert listing["ops"] == []
    assert len(listing["problems"]) == 1


def test_list_ops():
    assert list_ops(ops_imports) == {"ops": ["health", "own", "own_async"], "problems": []}
    assert list_ops(ops_declared)["ops"] == ["counter", "health", "own", "shared", "tagged"]
    listing = list_ops(ops_bad_declaration)
    assert listing["ops"] == ["health", "own"]
    assert len(listing["problems"]) == 2
    assert list_ops(cerebros_service)["ops"] == [
        "echo",
        "finalize_run",
        "health",
        "ray_cancel",
        "ray_connect",
        "ray_disconnect",
        "ray_end_run",
        "ray_start_run",
        "ray_submit",
        "ray_wait",
        "record_trial",
        "run_trial",
        "start_run",
        "sync_mlflow",
    ]


@pytest.mark.parametrize(
    ("result", "where", "kind"),
    [
        ({1: "a"}, "result", "int"),
        ({"a": [{"b": {None: 1}}]}, 'result["a"][0]["b"]', "NoneType"),
        ({"a": ({"x": [0, {2.5: 1}]},)}, 'result["a"][0]["x"][1]', "float"),
        ({"é\n": {True: 1}}, 'result["\\u00e9\\n"]', "bool"),
    ],
)
def test_results_with_non_string_keys_are_parse_errors(result, where, kind):
    with pytest.raises(OpError) as info:
        encode_result("op", result)
    assert info.value.error_class == "parse_error"
    assert info.value.message == (f"{where} has a key of type {kind}: JSON object keys must be str")


def test_shared_and_long_results_encode():
    shared = {"k": 1}
    result = {"a": [shared, shared, [1.5] * 1000], "b": (shared,)}
    assert json.loads(encode_result("op", result))["b"] == [{"k": 1}]


@pytest.mark.parametrize(
    ("exc", "type_name"),
    [(SystemExit(3), "SystemExit"), (KeyboardInterrupt(), "KeyboardInterrupt")],
)
def test_system_exit_and_keyboard_interrupt_are_exceptions(monkeypatch, exc, type_name):
    def leave(p):
        raise exc

    monkeypatch.setattr(ops_declared, "leave", leave, raising=False)
    monkeypatch.setattr(ops_declared, "__bridge_ops__", ["leave"])
    with pytest.raises(OpError) as info:
        call_op(ops_declared, "leave", {})
    assert info.value.error_class == "exception"
    assert info.value.details["type"] == type_name


def test_a_one_shot_process_exits_once_its_reply_is_out(tmp_path):
    (tmp_path / "ops_thread_service.py").write_text(
        textwrap.dedent(
            """
            import atexit, threading, time

            def leave(p):
                atexit.register(lambda: print("atexit ran", flush=True))
                threading.Thread(target=time.sleep, args=(30,)).start()
                return {"left": True}
            """
        )
    )
    python_dir = Path(cerebros_service.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(python_dir), str(tmp_path)])}
    env.pop("CEREBROS_BRIDGE_PAYLOAD", None)
    start = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "cerebros_service", "--bridge-op", "leave"]
        + ["--module", "ops_thread_service"],
        input="{}",
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert time.monotonic() - start < 10
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ['{"left": true}', "atexit ran"]


TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _span_context() -> tuple[str, str] | None:
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def test_an_op_runs_in_the_calls_trace_context_and_leaves_none_behind():
    seen = []

    def traced(payload):
        seen.append(_span_context())
        return {}

    module = type(sys)("traced_service")
    traced.__module__ = module.__name__
    module.traced = traced
    call_op(module, "traced", {}, traceparent=TRACEPARENT)
    assert seen[-1] == ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    assert _span_context() is None, "the context is restored after the op"
    # Untraced, malformed or hostile trace contexts are ignored.
    for traceparent in (None, "", "00-zz-b7-01", 42, TRACEPARENT + "x"):
        call_op(module, "traced", {}, traceparent=traceparent)
        assert seen[-1] is None, traceparent


def test_an_op_that_raises_leaves_the_trace_context_too():
    def broken(payload):
        raise ValueError("boom")

    module = type(sys)("broken_service")
    broken.__module__ = module.__name__
    module.broken = broken
    with pytest.raises(OpError):
        call_op(module, "broken", {}, traceparent=TRACEPARENT)
    assert _span_context() is None
