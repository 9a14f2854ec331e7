"""Unit tests of the Python service, its op rules and its CLI."""

import asyncio
import importlib.metadata
import io
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

import cerebros_service
import fault_service
from cerebros_service import __main__ as cli
from cerebros_service._dispatch import OpError, call_op, encode_result, resolve_op
from json_strategies import json_objects, json_values

PYTHON_DIR = Path(__file__).resolve().parents[2] / "python"

# -- strategies -----------------------------------------------------------------------------

json_payloads = json_objects(json_values())


# -- health and echo ------------------------------------------------------------------------


def test_versions():
    assert cerebros_service.__version__ == "0.1.0"
    assert cerebros_service.SERVICE_VERSION == cerebros_service.__version__


def test_health_report():
    report = cerebros_service.health({})
    assert report["status"] == "ok"
    assert report["service"] == "cerebros_service"
    assert report["service_version"] == cerebros_service.SERVICE_VERSION
    assert report["python_version"] == platform.python_version()
    assert report["implementation"] == platform.python_implementation()
    assert report["executable"] == sys.executable
    assert report["prefix"] == sys.prefix
    assert set(report["packages"]) == {"numpy", "sklearn", "mlflow", "keras", "jax"}
    assert report["packages"]["numpy"] == importlib.metadata.version("numpy")
    assert report["packages"]["sklearn"] == importlib.metadata.version("scikit-learn")
    json.loads(encode_result("health", report))


def test_health_reports_missing_package_as_none(monkeypatch):
    monkeypatch.setattr(
        cerebros_service, "_REPORTED_PACKAGES", {"no-such-distribution-xyz": "missing"}
    )
    assert cerebros_service.health({})["packages"] == {"missing": None}


def test_import_and_health_stay_light(python_dir):
    code = (
        "import sys, cerebros_service; cerebros_service.health({}); "
        "heavy = [m for m in ('numpy', 'sklearn', 'mlflow', 'keras', 'jax') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(python_dir)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"


def test_public_callables_are_exactly_the_ops():
    public = {
        name
        for name in dir(cerebros_service)
        if not name.startswith("_") and callable(getattr(cerebros_service, name))
    }
    assert public == {
        "health",
        "echo",
        "start_run",
        "run_trial",
        "record_trial",
        "finalize_run",
        "sync_mlflow",
        "ray_connect",
        "ray_start_run",
        "ray_submit",
        "ray_wait",
        "ray_cancel",
        "ray_end_run",
        "ray_disconnect",
    }


def test_echo_returns_an_equal_copy():
    payload = {"a": 1, "nested": {"b": [1, 2.5, None, "x"]}}
    result = cerebros_service.echo(payload)
    assert result == payload
    assert result is not payload


@given(json_payloads)
def test_echo_round_trips_json_like_dicts(payload):
    result = call_op(cerebros_service, "echo", payload)
    assert result == payload
    assert json.loads(encode_result("echo", result)) == payload


# -- op resolution --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["health", "echo"])
def test_resolve_op_accepts_service_ops(name):
    assert resolve_op(cerebros_service, name) is getattr(cerebros_service, name)


def test_resolve_op_accepts_async_ops():
    assert resolve_op(fault_service, "async_echo") is fault_service.async_echo


def _refusal(module, name) -> OpError:
    with pytest.raises(OpError) as info:
        resolve_op(module, name)
    assert info.value.error_class == "contract"
    assert str(info.value) == info.value.message
    return info.value


def test_refuses_dunder():
    err = _refusal(cerebros_service, "__init__")
    assert err.message == 'op "__init__" is private: op names starting with "_" are refused'


@pytest.mark.parametrize("name", ["_secret", "_counts", "_lock"])
def test_refuses_private(name):
    err = _refusal(fault_service, name)
    assert "is private" in err.message
    assert err.details["op"] == name


def test_refuses_private_helper_of_service():
    _refusal(cerebros_service, "_resolve_op")


def test_refuses_missing():
    err = _refusal(cerebros_service, "nope")
    assert err.message == 'unknown op "nope" in module cerebros_service'


@pytest.mark.parametrize("name", ["", "1abc", "has-dash", "a b", "echo()", "ëcho\n"])
def test_refuses_non_identifiers(name):
    _refusal(cerebros_service, name)


@pytest.mark.parametrize("name", [None, 3, b"echo"])
def test_refuses_non_string_names(name):
    _refusal(cerebros_service, name)


def test_refuses_class():
    err = _refusal(fault_service, "NotAnOp")
    assert "class" in err.message


@pytest.mark.parametrize("name", ["time", "asyncio", "ctypes"])
def test_refuses_module_objects(name):
    err = _refusal(fault_service, name)
    assert "module" in err.message


@pytest.mark.parametrize("name", ["SERVICE_VERSION"])
def test_refuses_non_callables(name):
    _refusal(cerebros_service, name)


def test_op_error_to_dict():
    err = OpError("contract", "bad", {"op": "x"})
    assert err.to_dict() == {"class": "contract", "message": "bad", "details": {"op": "x"}}
    assert OpError("timeout", "late").details == {}


# -- call_op and encode_result --------------------------------------------------------------


def test_call_op_awaits_coroutines():
    assert call_op(fault_service, "async_echo", {"k": 1}) == {"async": True, "k": 1}


def test_call_op_wraps_exceptions():
    with pytest.raises(OpError) as info:
        call_op(fault_service, "fail", {"message": "kaput"})
    err = info.value
    assert err.error_class == "exception"
    assert err.details["type"] == "ValueError"
    assert err.details["message"] == "kaput"
    assert "ValueError: kaput" in err.details["traceback"]
    assert "def fail" not in err.message


@pytest.mark.parametrize("name", ["return_list", "return_int"])
def test_call_op_refuses_non_dict_results(name):
    with pytest.raises(OpError) as info:
        call_op(fault_service, name, {})
    assert info.value.error_class == "parse_error"
    assert "expected dict" in info.value.message


@pytest.mark.parametrize("payload", [[1], "x", None, 3])
def test_call_op_refuses_non_dict_payloads(payload):
    with pytest.raises(OpError) as info:
        call_op(cerebros_service, "echo", payload)
    assert info.value.error_class == "contract"


@pytest.mark.parametrize("name", ["return_set", "return_object", "return_nan"])
def test_encode_result_refuses_non_json(name):
    result = call_op(fault_service, name, {})
    with pytest.raises(OpError) as info:
        encode_result(name, result)
    assert info.value.error_class == "parse_error"
    assert "not JSON-representable" in info.value.message


# -- the CLI --------------------------------------------------------------------------------


def run_cli(python_dir, *args, stdin="", env=None):
    full_env = {**os.environ, "PYTHONPATH": str(python_dir)}
    full_env.pop("CEREBROS_BRIDGE_PAYLOAD", None)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "cerebros_service", *args],
        input=stdin,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_echo_from_stdin(python_dir):
    payload = {"a": 1, "b": ["x", None, 2.5], "c": {"ü": True}}
    out = run_cli(python_dir, "--bridge-op", "echo", stdin=json.dumps(payload))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == payload
    assert out.stdout.count("\n") == 1


def test_cli_echo_from_env(python_dir):
    payload = {"from": "env"}
    out = run_cli(
        python_dir, "--bridge-op", "echo", env={"CEREBROS_BRIDGE_PAYLOAD": json.dumps(payload)}
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == payload


def test_cli_stdin_wins_over_env(python_dir):
    out = run_cli(
        python_dir,
        "--bridge-op",
        "echo",
        stdin='{"from": "stdin"}',
        env={"CEREBROS_BRIDGE_PAYLOAD": '{"from": "env"}'},
    )
    assert json.loads(out.stdout) == {"from": "stdin"}


def test_cli_empty_payload_is_empty_dict(python_dir):
    out = run_cli(python_dir, "--bridge-op", "echo", stdin="  \n")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {}


def test_cli_health(python_dir):
    out = run_cli(python_dir, "--bridge-op", "health")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["status"] == "ok"
    assert report["executable"] == sys.executable


@pytest.mark.parametrize(
    ("op", "fragment"),
    [
        ("nope", 'unknown op "nope" in module cerebros_service'),
        ("__init__", 'op "__init__" is private'),
        ("_resolve_op", "is private"),
        ("SERVICE_VERSION", "is a value of type str, not an op"),
        ("not-an-identifier", "not a Python identifier"),
    ],
)
def test_cli_refused_ops_exit_2(python_dir, op, fragment):
    out = run_cli(python_dir, "--bridge-op", op, stdin="{}")
    assert out.returncode == 2
    doc = json.loads(out.stdout)
    assert doc["ok"] is False
    assert doc["error"]["class"] == "contract"
    assert fragment in doc["error"]["message"]
    assert doc["error"]["details"]["op"] == op


@pytest.mark.parametrize("stdin", ["{not json", "[1, 2]", '"text"', "\xff"])
def test_cli_bad_payload_exit_2(python_dir, stdin):
    out = run_cli(python_dir, "--bridge-op", "echo", stdin=stdin)
    assert out.returncode == 2
    doc = json.loads(out.stdout)
    assert doc["ok"] is False
    assert doc["error"]["class"] == "contract"


def test_cli_requires_bridge_op(python_dir):
    out = run_cli(python_dir)
    assert out.returncode == 2
    assert "--bridge-op" in out.stderr


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_payloads)
def test_cli_echo_round_trips(payload):
    out = run_cli(PYTHON_DIR, "--bridge-op", "echo", stdin=json.dumps(payload))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == payload


def _expose(monkeypatch, module, name, func):
    """Put ``func`` on ``module`` as op ``name``: defined elsewhere, it must be listed in the
    module's ``__bridge_ops__``."""
    monkeypatch.setattr(module, name, func, raising=False)
    declared = [*getattr(module, "__bridge_ops__", []), name]
    monkeypatch.setattr(module, "__bridge_ops__", declared, raising=False)


def _run_in_process(monkeypatch, capfd, op, payload="{}"):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(payload.encode())))
    code = cli.main(["--bridge-op", op])
    out, err = capfd.readouterr()
    return code, out, err


def test_cli_exception_exit_1(monkeypatch, capfd):
    def boom(p):
        raise RuntimeError("it broke")

    _expose(monkeypatch, cerebros_service, "boom", boom)
    code, out, _ = _run_in_process(monkeypatch, capfd, "boom")
    assert code == 1
    doc = json.loads(out)
    assert doc["ok"] is False
    assert doc["error"]["class"] == "exception"
    details = doc["error"]["details"]
    assert details["type"] == "RuntimeError"
    assert details["message"] == "it broke"
    assert "RuntimeError: it broke" in details["traceback"]


def test_cli_awaits_async_ops(monkeypatch, capfd):
    async def later(p):
        await asyncio.sleep(0)
        return {"later": p["v"]}

    _expose(monkeypatch, cerebros_service, "later", later)
    code, out, _ = _run_in_process(monkeypatch, capfd, "later", '{"v": 3}')
    assert code == 0
    assert json.loads(out) == {"later": 3}


def test_cli_keeps_op_output_off_stdout(monkeypatch, capfd):
    def chatty(p):
        print("python print")
        os.write(1, b"fd write\n")
        return {"quiet": True}

    _expose(monkeypatch, cerebros_service, "chatty", chatty)
    code, out, err = _run_in_process(monkeypatch, capfd, "chatty")
    assert code == 0
    assert json.loads(out) == {"quiet": True}
    assert "python print" in err
    assert "fd write" in err


@pytest.mark.parametrize(
    ("op", "message"),
    [
        ("return_set", "not JSON-representable"),
        ("return_nan", "not JSON-representable"),
        ("return_list", "expected dict"),
    ],
)
def test_cli_bad_results_exit_1(monkeypatch, capfd, op, message):
    _expose(monkeypatch, cerebros_service, op, getattr(fault_service, op))
    code, out, _ = _run_in_process(monkeypatch, capfd, op)
    assert code == 1
    doc = json.loads(out)
    assert doc["error"]["class"] == "parse_error"
    assert message in doc["error"]["message"]


# -- --module and --serve-stdio -------------------------------------------------------------

FIXTURES_DIR = Path(__file__).resolve().parents[1] / "fixtures"
SERVICE_PATH = os.pathsep.join([str(PYTHON_DIR), str(FIXTURES_DIR)])


def test_cli_module_dispatches_to_another_module(python_dir):
    env = {"PYTHONPATH": SERVICE_PATH}
    out = run_cli(python_dir, "--bridge-op", "health", "--module", "fault_service", env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"status": "ok"}
    out = run_cli(python_dir, "--bridge-op", "fail", "--module", "fault_service", env=env)
    assert out.returncode == 1
    error = json.loads(out.stdout)["error"]
    assert error["class"] == "exception"
    assert error["details"]["type"] == "ValueError"
    out = run_cli(python_dir, "--bridge-op", "_secret", "--module", "fault_service", env=env)
    assert out.returncode == 2
    assert json.loads(out.stdout)["error"]["class"] == "contract"


def test_cli_unknown_module_is_a_dependency_error(python_dir):
    out = run_cli(python_dir, "--bridge-op", "health", "--module", "no_such_module_xyz")
    assert out.returncode == 1
    error = json.loads(out.stdout)["error"]
    assert error["class"] == "dependency"
    assert "no_such_module_xyz" in error["message"]


def serve(requests: list[str], module: str = "fault_service") -> tuple[list[dict], str, int]:
    """Run ``--serve-stdio``, write all request lines at once, close stdin, read replies."""
    env = {**os.environ, "PYTHONPATH": SERVICE_PATH}
    proc = subprocess.run(
        [sys.executable, "-m", "cerebros_service", "--serve-stdio", "--module", module],
        input="".join(line + "\n" for line in requests),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    replies = [json.loads(line) for line in proc.stdout.splitlines()]
    return replies, proc.stderr, proc.returncode


def _request(request_id, op, payload=None) -> str:
    return json.dumps({"id": request_id, "op": op, "payload": payload or {}})


def test_serve_stdio_answers_pipelined_requests_in_order():
    requests = [_request(n, "echo", {"n": n, "ü": "é"}) for n in range(1, 21)]
    replies, _, code = serve(requests)
    assert code == 0
    ready, *answers = replies
    assert ready["id"] == 0 and ready["ok"] is True
    assert ready["result"]["ready"] is True
    assert ready["result"]["module"] == "fault_service"
    assert [a["id"] for a in answers] == list(range(1, 21))
    assert all(a["ok"] for a in answers)
    assert answers[4]["result"] == {"n": 5, "ü": "é"}


def test_serve_stdio_keeps_op_output_off_the_protocol_stream():
    requests = [
        _request(1, "print_stdout", {"line": '{"id": 1, "ok": false}'}),
        _request(2, "write_fd1", {"text": "raw fd write\n"}),
        _request(3, "echo", {"after": True}),
    ]
    replies, stderr, code = serve(requests)
    assert code == 0
    assert [r["id"] for r in replies] == [0, 1, 2, 3]
    assert replies[1] == {"id": 1, "ok": True, "result": {"printed": True}}
    assert replies[2] == {"id": 2, "ok": True, "result": {"written": True}}
    assert replies[3]["result"] == {"after": True}
    assert '{"id": 1, "ok": false}' in stderr
    assert "raw fd write" in stderr


def test_serve_stdio_answers_bad_lines_with_contract_errors_and_goes_on():
    requests = [
        "not json",
        "[1, 2]",
        json.dumps({"op": "echo", "payload": {}}),
        json.dumps({"id": 5}),
        json.dumps({"id": 6, "op": "echo", "payload": [1]}),
        _request(7, "nope"),
        _request(8, "_secret"),
        _request(9, "echo", {"still": "serving"}),
    ]
    replies, _, code = serve(requests)
    assert code == 0
    errors = replies[1:-1]
    assert [e["id"] for e in errors] == [None, None, None, 5, 6, 7, 8]
    assert all(e["ok"] is False and e["error"]["class"] == "contract" for e in errors)
    assert replies[-1] == {"id": 9, "ok": True, "result": {"still": "serving"}}


def test_serve_stdio_reports_op_failures_with_their_class():
    requests = [
        _request(1, "fail", {"message": "bad"}),
        _request(2, "return_set"),
        _request(3, "return_list"),
        _request(4, "return_nan"),
        _request(5, "async_echo", {"v": 1}),
    ]
    replies, _, _ = serve(requests)
    by_id = {r["id"]: r for r in replies}
    assert by_id[1]["error"]["class"] == "exception"
    assert by_id[1]["error"]["details"]["type"] == "ValueError"
    assert "ValueError: bad" in by_id[1]["error"]["details"]["traceback"]
    assert {by_id[n]["error"]["class"] for n in (2, 3, 4)} == {"parse_error"}
    assert by_id[5]["result"] == {"async": True, "v": 1}


def test_serve_stdio_unknown_module_reports_dependency_and_exits():
    replies, _, code = serve([_request(1, "echo")], module="no_such_module_xyz")
    assert code == 1
    assert len(replies) == 1
    assert replies[0]["id"] == 0
    assert replies[0]["error"]["class"] == "dependency"


def test_reply_survives_system_exit_in_an_op(monkeypatch):
    def leave(p):
        raise SystemExit(3)

    _expose(monkeypatch, fault_service, "leave", leave)
    reply = json.loads(cli._reply(fault_service, _request(4, "leave").encode()))
    assert reply["id"] == 4
    assert reply["error"]["class"] == "exception"
    assert reply["error"]["details"]["type"] == "SystemExit"


def test_call_op_reports_a_missing_package_as_dependency():
    with pytest.raises(OpError) as info:
        call_op(fault_service, "missing_package", {})
    assert info.value.error_class == "dependency"
    assert "cerebros_no_such_package" in info.value.message
