"""The native module ``cerebros_service._bridge``: the Rust bridge used from a Python host.

Covers calls through ``Bridge`` (in ``in_process`` mode the pool's workers are threads of this
very interpreter, so ``call`` must release the GIL while it waits), every error class raised as
its own subclass, the contract functions (property-tested against the JSON Schema generated from
the Rust types), cancellation of late calls, and the host's state (``sys.path``, exit).
"""

import _thread
import builtins
import json
import math
import os
import platform
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cerebros_service import _bridge
from cerebros_service.vocabulary import ERROR_CLASSES, TRIAL_STATUSES

REPO_ROOT = Path(__file__).resolve().parents[2]
PYTHON_DIR = REPO_ROOT / "python"
FIXTURES_DIR = REPO_ROOT / "tests" / "fixtures"

EXCEPTION_NAMES = {
    "dependency": "DependencyError",
    "config": "ConfigError",
    "contract": "ContractError",
    "timeout": "CallTimeoutError",
    "exception": "OpExceptionError",
    "subprocess_exit": "SubprocessExitError",
    "parse_error": "ParseError",
    "system_error": "BridgeSystemError",
    "overloaded": "OverloadedError",
    "cancelled": "CallCancelledError",
}
OP_FOR_CONTRACT = {
    "run_started": "start_run",
    "trial_requested": "run_trial",
    "trial_reported": "record_trial",
    "run_finalized": "finalize_run",
}


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _isolated_config(tmp_path_factory: pytest.TempPathFactory):
    """No ``CEREBROS_*`` variable or ``./cerebros.toml`` of the caller's shell leaks in."""
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("CEREBROS_"):
                mp.delenv(name)
        mp.chdir(tmp_path_factory.mktemp("cwd"))
        yield


@pytest.fixture(scope="module")
def service() -> _bridge.Bridge:
    """The real service module, in process."""
    with _bridge.Bridge(repo_path=PYTHON_DIR, pool_size=2) as bridge:
        yield bridge


@pytest.fixture(scope="module")
def faults() -> _bridge.Bridge:
    """The fault-injection module, in process, no retries."""
    with _bridge.Bridge(
        module="fault_service", repo_path=FIXTURES_DIR, pool_size=2, max_retries=0
    ) as bridge:
        yield bridge


def fresh_faults(**kwargs: Any) -> _bridge.Bridge:
    """A bridge of its own over ``fault_service`` (for tests that count or break workers)."""
    options: dict[str, Any] = {"pool_size": 2, "max_retries": 0, **kwargs}
    return _bridge.Bridge(module="fault_service", repo_path=FIXTURES_DIR, **options)


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cerebros.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# -- calls ----------------------------------------------------------------------------------


def test_echo_round_trips_json_values(service: _bridge.Bridge) -> None:
    payload = {
        "run_id": "r1",
        "text": "héllo ✓ \u0000 \U0001f600",
        "ints": [0, -1, 2**63 - 1, -(2**63), 2**64 - 1],
        "floats": [0.1, -2.5e-300, 1.7976931348623157e308, -0.0],
        "nested": {"a": [None, True, False, {"b": []}], "": {}},
    }
    assert service.call("echo", payload) == payload
    assert service.call("echo", {"t": (1, 2)}) == {"t": [1, 2]}


def test_health_runs_in_this_interpreter(service: _bridge.Bridge) -> None:
    health = service.call("health", {})
    assert health["status"] == "ok"
    assert health["python_version"] == platform.python_version()
    assert health["executable"] == sys.executable


def test_bridge_reports_its_settings(service: _bridge.Bridge) -> None:
    assert (service.mode, service.module, service.pool_size) == (
        "in_process",
        "cerebros_service",
        2,
    )
    assert service.timeout_ms == 15_000
    assert not service.closed
    assert "in_process" in repr(service)


def test_workers_are_threads_of_this_interpreter(faults: _bridge.Bridge) -> None:
    idents = {faults.call("thread_ident", {})["ident"] for _ in range(50)}
    assert threading.get_ident() not in idents
    assert 1 <= len(idents) <= 2


def test_concurrent_python_threads_share_the_pool(faults: _bridge.Bridge) -> None:
    def one(i: int) -> dict:
        return faults.call("echo", {"i": i})

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(400)))
    assert results == [{"i": i} for i in range(400)]


def test_a_python_thread_keeps_running_while_call_waits(faults: _bridge.Bridge) -> None:
    count = 0
    stop = threading.Event()

    def counter() -> None:
        nonlocal count
        while not stop.is_set():
            count += 1

    thread = threading.Thread(target=counter)
    thread.start()
    try:
        time.sleep(0.05)
        before = count
        result = faults.call("sleep", {"seconds": 0.3}, timeout_ms=5_000)
        during = count - before
    finally:
        stop.set()
        thread.join()
    assert result == {"slept": 0.3}
    # Holding the GIL for the 0.3 s wait would have frozen the counter.
    assert during > 10_000, during


def test_call_options_cache_and_retries(tmp_path: Path) -> None:
    with fresh_faults() as bridge:
        bridge.call("count_reset", {})
        first = bridge.call("count", {"key": "k"}, cache_key="count-k")
        second = bridge.call("count", {"key": "k"}, cache_key="count-k")
        assert first == second == {"count": 1}
        assert bridge.call("count", {"key": "k"}) == {"count": 2}
        stats = bridge.stats()
        assert (stats["cache_hits"], stats["cache_misses"]) == (1, 1)
        # One retry after a timeout: the second attempt of `flaky` is fast.
        reply = bridge.call(
            "flaky", {"key": "retry-test", "fail_times": 1}, timeout_ms=300, max_retries=1
        )
        assert reply == {"attempt": 2}
        assert bridge.stats()["retries"] == 1


def test_stats_count_calls_errors_and_workers() -> None:
    with fresh_faults() as bridge:
        for i in range(5):
            bridge.call("echo", {"i": i})
        for op in ("fail", "nope"):
            with pytest.raises(_bridge.BridgeError):
                bridge.call(op, {})
        # A worker counts as alive once its thread has attached to the interpreter.
        wait_until(lambda: bridge.stats()["workers_alive"] == 2)
        stats = bridge.stats()
    assert stats["mode"] == "in_process"
    assert stats["calls"] == 7
    assert stats["errors"] == {"exception": 1, "contract": 1}
    assert (stats["workers"], stats["workers_alive"], stats["workers_retired"]) == (2, 2, 0)
    assert {"cache_hits", "cache_misses", "workers_stuck", "queued", "submitted"} <= set(stats)
    assert stats["closed"] is False


def test_close_is_idempotent_and_ends_calls() -> None:
    bridge = fresh_faults()
    with bridge as entered:
        assert entered is bridge
        assert bridge.call("echo", {"a": 1}) == {"a": 1}
    assert bridge.closed
    bridge.close()
    with pytest.raises(_bridge.CallCancelledError) as err:
        bridge.call("echo", {})
    assert err.value.error_class == "cancelled"
    wait_until(lambda: bridge.stats()["workers_alive"] == 0)
    assert bridge.stats()["closed"] is True


def test_worker_process_mode_gives_the_same_results() -> None:
    with fresh_faults(mode="worker_process", pool_size=1) as bridge:
        assert bridge.mode == "worker_process"
        assert bridge.call("echo", {"x": [1, "a"]}) == {"x": [1, "a"]}
        assert bridge.call("getpid", {})["pid"] != os.getpid()
        with pytest.raises(_bridge.OpExceptionError):
            bridge.call("fail", {})


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("error_class", ERROR_CLASSES)
def test_each_error_class_has_its_own_exception(error_class: str) -> None:
    exc_type = getattr(_bridge, EXCEPTION_NAMES[error_class])
    assert _bridge.ERROR_CLASSES[error_class] is exc_type
    assert issubclass(exc_type, _bridge.BridgeError) and exc_type is not _bridge.BridgeError
    assert exc_type.error_class == error_class
    details = {"returncode": 3, "nested": {"a": [1.5, None]}}
    with pytest.raises(exc_type) as err:
        _bridge._raise_bridge_error(
            error_class, "it failed", details, op="some_op", attempt=2, run_id="r9"
        )
    exc = err.value
    assert (exc.error_class, exc.message, exc.details) == (error_class, "it failed", details)
    assert (exc.op, exc.attempt, exc.run_id) == ("some_op", 2, "r9")
    assert str(exc) == f"{error_class}: it failed (op some_op, attempt 2)"


def test_exception_names_do_not_shadow_builtins() -> None:
    exported = {name for name in _bridge.__all__ if not name.startswith("_")}
    assert not exported & set(dir(builtins))
    assert not issubclass(_bridge.CallTimeoutError, TimeoutError)
    with pytest.raises(ValueError):
        _bridge._raise_bridge_error("nonsense", "x")


def test_dependency_error_for_a_missing_module() -> None:
    with pytest.raises(_bridge.DependencyError) as err:
        _bridge.Bridge(module="no_such_module_for_bridge_tests", repo_path=FIXTURES_DIR)
    assert err.value.error_class == "dependency"
    assert err.value.details["module"] == "no_such_module_for_bridge_tests"
    assert "ModuleNotFoundError" in err.value.details["traceback"]


def test_dependency_error_when_disabled(tmp_path: Path) -> None:
    config = write_config(tmp_path, "enabled = false\n")
    with pytest.raises(_bridge.DependencyError, match="disabled"):
        _bridge.Bridge(config=config)


def test_config_errors_name_the_key_and_the_argument(tmp_path: Path) -> None:
    with pytest.raises(_bridge.ConfigError) as err:
        _bridge.Bridge(pool_size=0)
    assert err.value.details == {"key": "invoke.pool_size", "source": "Bridge(pool_size=...)"}
    assert "invoke.pool_size = 0 (from Bridge(pool_size=...))" in err.value.message
    with pytest.raises(_bridge.ConfigError, match="expected one of in_process"):
        _bridge.Bridge(mode="fast")  # type: ignore[arg-type]
    with pytest.raises(_bridge.ConfigError, match="pool_sise"):
        _bridge.Bridge(config=write_config(tmp_path, "[invoke]\npool_sise = 2\n"))
    with pytest.raises(_bridge.ConfigError):
        _bridge.Bridge(config=tmp_path / "missing.toml")


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("pool_size", -1),
        ("pool_size", 10**30),
        ("pool_size", "2"),
        ("timeout_ms", True),
        ("timeout_ms", 1.5),
        ("max_retries", 101),
    ],
)
def test_a_bad_number_argument_is_a_config_error_naming_it(argument: str, value: object) -> None:
    # Typed extraction answered a bare OverflowError or TypeError.
    with pytest.raises(_bridge.ConfigError) as err:
        _bridge.Bridge(**{argument: value})  # type: ignore[arg-type]
    assert err.value.details["key"] == argument


def test_a_calls_bad_numbers_are_config_errors_naming_them(faults: _bridge.Bridge) -> None:
    for argument, value in [("timeout_ms", -1), ("max_retries", 10**6), ("max_retries", -1)]:
        with pytest.raises(_bridge.ConfigError) as err:
            faults.call("echo", {}, **{argument: value})  # type: ignore[arg-type]
        assert err.value.details["key"] == argument
        assert err.value.op == "echo"


def test_per_call_timeout_must_be_positive(faults: _bridge.Bridge) -> None:
    with pytest.raises(_bridge.ConfigError) as err:
        faults.call("echo", {}, timeout_ms=0)
    assert err.value.op == "echo"


@pytest.mark.parametrize(
    ("op", "payload", "needle"),
    [
        ("nope", {}, "unknown op"),
        ("_secret", {}, "private"),
        ("NotAnOp", {}, "is a class, not an op"),
        ("echo", {"x": math.nan}, 'payload["x"]: NaN'),
        ("echo", {"x": [1, math.inf]}, 'payload["x"][1]: inf'),
        ("echo", {"big": 2**64}, "does not fit in 64 bits"),
        ("echo", {"b": b"raw"}, "bytes cannot cross"),
        ("echo", {1: "int key"}, "str dict key"),
        ("echo", {"o": object()}, "unsupported type"),
        ("echo", {"s": "\ud800"}, 'payload["s"]'),
        ("echo", [1, 2], "must be a JSON object"),
        ("start_run", {"run_id": "r1"}, "missing field `timestamp`"),
    ],
)
def test_contract_errors(faults: _bridge.Bridge, op: str, payload: Any, needle: str) -> None:
    with pytest.raises(_bridge.ContractError) as err:
        faults.call(op, payload)
    assert err.value.error_class == "contract"
    assert err.value.op == op
    assert needle in err.value.message, err.value.message


def test_deep_and_self_referencing_payloads_are_refused(faults: _bridge.Bridge) -> None:
    deep: dict = {}
    node = deep
    for _ in range(300):
        node["d"] = {}
        node = node["d"]
    with pytest.raises(_bridge.ContractError, match="deeper than 256"):
        faults.call("echo", deep)
    loop: dict = {}
    loop["self"] = loop
    with pytest.raises(_bridge.ContractError, match="deeper than 256"):
        faults.call("echo", loop)


def test_timeout_error(faults: _bridge.Bridge) -> None:
    with pytest.raises(_bridge.CallTimeoutError) as err:
        faults.call("spin", {}, timeout_ms=200)
    exc = err.value
    assert (exc.error_class, exc.op, exc.attempt) == ("timeout", "spin", 1)
    assert exc.details["timeout_ms"] == 200


def test_op_exception_error(faults: _bridge.Bridge) -> None:
    with pytest.raises(_bridge.OpExceptionError) as err:
        faults.call("fail", {"message": "kaboom", "run_id": "r7"})
    exc = err.value
    assert exc.error_class == "exception"
    assert (exc.details["type"], exc.details["message"]) == ("ValueError", "kaboom")
    assert "fault_service.py" in exc.details["traceback"]
    assert exc.run_id == "r7"


def test_subprocess_exit_error() -> None:
    with fresh_faults(mode="worker_process", pool_size=1) as bridge:
        with pytest.raises(_bridge.SubprocessExitError) as err:
            bridge.call("crash", {"code": 3})
        assert err.value.error_class == "subprocess_exit"
        assert err.value.details["returncode"] == 3
        # The dead child was replaced.
        assert bridge.call("echo", {"after": True}) == {"after": True}


@pytest.mark.parametrize(
    ("op", "needle"),
    [("return_set", "set"), ("return_nan", "NaN"), ("return_list", "expected a dict")],
)
def test_parse_errors(faults: _bridge.Bridge, op: str, needle: str) -> None:
    with pytest.raises(_bridge.ParseError) as err:
        faults.call(op, {})
    assert err.value.error_class == "parse_error"
    assert needle in err.value.message


def test_overloaded_error(tmp_path: Path) -> None:
    config = write_config(tmp_path, "[invoke]\npool_size = 1\nqueue_capacity = 1\n")
    with _bridge.Bridge(
        config=config, module="fault_service", repo_path=FIXTURES_DIR, max_retries=0
    ) as bridge:
        with ThreadPoolExecutor(2) as pool:
            running = pool.submit(bridge.call, "sleep", {"seconds": 0.3})
            wait_until(lambda: bridge.stats()["submitted"] == 1 and bridge.stats()["queued"] == 0)
            queued = pool.submit(bridge.call, "echo", {"queued": True})
            wait_until(lambda: bridge.stats()["queued"] == 1)
            with pytest.raises(_bridge.OverloadedError) as err:
                bridge.call("echo", {})
            assert err.value.error_class == "overloaded"
            assert running.result(5) == {"slept": 0.3}
            assert queued.result(5) == {"queued": True}


def test_cancelled_error_for_a_call_queued_at_close() -> None:
    bridge = fresh_faults(pool_size=1)
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(bridge.call, "spin", {}, 10_000)
        wait_until(lambda: bridge.stats()["submitted"] == 1 and bridge.stats()["queued"] == 0)
        queued = pool.submit(bridge.call, "echo", {}, 10_000)
        wait_until(lambda: bridge.stats()["queued"] == 1)
        bridge.close()
        with pytest.raises(_bridge.CallCancelledError) as err:
            queued.result(5)
        assert err.value.error_class == "cancelled"
        # The running call was stopped by the shutdown, not left to spin, and reads as
        # cancelled: a timeout is a class callers retry.
        with pytest.raises(_bridge.CallCancelledError):
            running.result(5)


# -- cancellation ---------------------------------------------------------------------------


def test_a_spinning_op_is_cancelled_at_its_deadline() -> None:
    with fresh_faults() as bridge:
        started = time.monotonic()
        with pytest.raises(_bridge.CallTimeoutError):
            bridge.call("spin", {}, timeout_ms=300)
        elapsed = time.monotonic() - started
        # The deadline, then the cancel grace (250 ms) and a second for the machine.
        assert 0.29 <= elapsed < 0.3 + 0.25 + 1.0, elapsed
        # Well past the cancel grace (250 ms): the worker stopped the op and was kept.
        time.sleep(0.5)
        stats = bridge.stats()
        assert (stats["workers_retired"], stats["workers_alive"]) == (0, 2)
        assert [bridge.call("echo", {"i": i}) for i in range(4)] == [{"i": i} for i in range(4)]


def test_a_sleeping_op_costs_its_worker_and_the_pool_keeps_its_size() -> None:
    with fresh_faults() as bridge:
        started = time.monotonic()
        with pytest.raises(_bridge.CallTimeoutError):
            bridge.call("sleep", {"seconds": 60}, timeout_ms=300)
        assert time.monotonic() - started < 0.3 + 0.25 + 1.0
        wait_until(lambda: bridge.stats()["workers_retired"] == 1)
        wait_until(lambda: bridge.stats()["workers_alive"] == 2)
        assert bridge.stats()["workers_stuck"] == 1
        # Both slots serve: two calls that each wait for the other (for up to 10 s) meet.
        meeting = {"key": "py-pool-keeps-its-size", "parties": 2, "seconds": 10}
        with ThreadPoolExecutor(2) as pool:
            replies = list(
                pool.map(lambda _: bridge.call("rendezvous", meeting, timeout_ms=30_000), range(2))
            )
        assert replies == [{"met": True}] * 2, bridge.stats()
        assert bridge.call("echo", {"after": 1}) == {"after": 1}


def test_ctrl_c_interrupts_a_waiting_call_and_cancels_it() -> None:
    # Python's own Ctrl-C handler, whatever started the tests: a shell's background job
    # (`make test &`) starts with SIGINT ignored, and then `interrupt_main` does nothing.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    with fresh_faults() as bridge:
        timer = threading.Timer(0.3, _thread.interrupt_main)
        started = time.monotonic()
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                bridge.call("spin", {}, timeout_ms=10_000)
        finally:
            timer.cancel()
            signal.signal(signal.SIGINT, previous)
        assert time.monotonic() - started < 2.0
        time.sleep(0.5)
        stats = bridge.stats()
        assert (stats["workers_retired"], stats["workers_alive"]) == (0, 2)
        assert bridge.call("echo", {"ok": True}) == {"ok": True}


# -- the host -------------------------------------------------------------------------------


def run_python(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CEREBROS_")}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO_ROOT,
    )


def test_a_fresh_host_keeps_its_import_state() -> None:
    code = f"""
        import json, sys
        from cerebros_service import _bridge
        state = lambda: [list(sys.path), sys.executable, sys.prefix, sys.exec_prefix]
        before = state()
        with _bridge.Bridge(repo_path={str(PYTHON_DIR)!r}) as bridge:
            health = bridge.call("health", {{}})
        print(json.dumps({{"before": before, "after": state(), "health": health,
                          "switch": sys.getswitchinterval()}}))
    """
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    before, after = report["before"], report["after"]
    # The service's repo_path may be put first on sys.path (unless it is there already);
    # nothing else changes: no venv activation inside a host.
    assert after[1:] == before[1:]
    assert after[0] in (before[0], [str(PYTHON_DIR), *before[0]])
    assert report["health"]["executable"] == sys.executable
    assert report["switch"] == pytest.approx(_bridge.SWITCH_INTERVAL_S)


def test_the_host_exits_promptly_with_open_bridges_and_a_stuck_worker() -> None:
    code = f"""
        from cerebros_service import _bridge
        bridge = _bridge.Bridge(module="fault_service", repo_path={str(FIXTURES_DIR)!r},
                                max_retries=0)
        try:
            bridge.call("sleep", {{"seconds": 60}}, timeout_ms=200)
        except _bridge.CallTimeoutError:
            print("timed out")
        idle = _bridge.Bridge(repo_path={str(PYTHON_DIR)!r})
        print(idle.call("echo", {{"left": "open"}}))
    """
    started = time.monotonic()
    done = run_python(code, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["timed out", "{'left': 'open'}"]
    assert time.monotonic() - started < 10


# -- contracts ------------------------------------------------------------------------------

SCHEMA = _bridge.contract_schema()
DEFS = SCHEMA["$defs"]
CONTRACT_DEFS = {
    definition["properties"]["contract"]["const"]: name
    for name, definition in DEFS.items()
    if "contract" in definition.get("properties", {})
}
INT_RANGES = {
    "uint32": (0, 2**32 - 1),
    "uint64": (0, 2**64 - 1),
    "int64": (-(2**63), 2**63 - 1),
}
JSON_TYPES = ("null", "boolean", "integer", "number", "string", "array", "object")

# Text that UTF-8 (and so JSON) can carry: no lone surrogates.
texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
values_of_json_type = {
    "null": st.none(),
    "boolean": st.booleans(),
    "integer": st.integers(-(2**63), 2**63 - 1),
    # Non-integral, so that no JSON Schema reading could take it for an integer.
    "number": st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer()),
    "string": texts,
    "array": st.lists(json_values, max_size=3),
    "object": st.dictionaries(texts, json_values, max_size=3),
}


def resolve(schema: dict) -> dict:
    while "$ref" in schema:
        schema = DEFS[schema["$ref"].rsplit("/", 1)[1]]
    return schema


def from_schema(schema: dict | bool) -> st.SearchStrategy:
    """Values valid for a (sub)schema of the shapes schemars generates here."""
    if schema is True:
        return json_values
    schema = resolve(schema)
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "oneOf" in schema:
        return st.one_of([from_schema(option) for option in schema["oneOf"]])
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of([from_schema({**schema, "type": k}) for k in kind])
    if kind == "integer":
        low, high = INT_RANGES.get(schema.get("format", "int64"), INT_RANGES["int64"])
        return st.integers(max(low, schema.get("minimum", low)), high)
    if kind == "array":
        return st.lists(from_schema(schema.get("items", True)), max_size=3)
    if kind == "object" and "properties" not in schema:
        return values_of_json_type["object"]
    if kind in values_of_json_type:
        return values_of_json_type[kind]
    raise ValueError(f"no strategy for schema {schema!r}")


def allowed_types(schema: dict) -> set[str]:
    schema = resolve(schema)
    if "const" in schema:
        return {"string"} if isinstance(schema["const"], str) else {"integer"}
    if "oneOf" in schema:
        return set().union(*(allowed_types(option) for option in schema["oneOf"]))
    kind = schema.get("type")
    return set(kind) if isinstance(kind, list) else {kind}


def contract_strategy(contract: str) -> st.SearchStrategy[dict]:
    """Every required field, plus any subset of the optional ones."""
    definition = DEFS[CONTRACT_DEFS[contract]]
    required = set(definition["required"])
    fields = definition["properties"]
    return st.fixed_dictionaries(
        {key: from_schema(fields[key]) for key in fields if key in required},
        optional={key: from_schema(fields[key]) for key in fields if key not in required},
    )


valid_contracts = st.sampled_from(sorted(CONTRACT_DEFS)).flatmap(contract_strategy)


@st.composite
def invalid_contracts(draw: st.DrawFn) -> tuple[str, str, dict]:
    """A valid contract broken one way: (how, contract name, the broken contract)."""
    name = draw(st.sampled_from(sorted(CONTRACT_DEFS)))
    contract = draw(contract_strategy(name))
    definition = DEFS[CONTRACT_DEFS[name]]
    fields = definition["properties"]
    how = draw(
        st.sampled_from(
            ["missing", "version", "unknown_contract", "wrong_type", "out_of_range", "unknown"]
        )
    )
    if how == "missing":
        del contract[draw(st.sampled_from(sorted(definition["required"])))]
    elif how == "version":
        contract["version"] = draw(
            st.integers().filter(lambda v: v != 1)
            | st.floats(allow_nan=False)
            | texts
            | st.none()
            | st.booleans()
        )
    elif how == "unknown_contract":
        contract["contract"] = draw(
            texts.filter(lambda t: t not in CONTRACT_DEFS) | st.integers() | st.none()
        )
    elif how == "wrong_type":
        key = draw(st.sampled_from(sorted(set(fields) - {"contract", "version"})))
        schema = resolve(fields[key])
        wrong = [t for t in JSON_TYPES if t not in allowed_types(schema)]
        bad = st.one_of([values_of_json_type[t] for t in wrong])
        if "oneOf" in schema:  # an enum of strings: any other string is wrong too
            names = {option["const"] for option in schema["oneOf"]}
            bad = bad | texts.filter(lambda t: t not in names)
        contract[key] = draw(bad)
    elif how == "out_of_range":
        integral = sorted(k for k in fields if "integer" in allowed_types(fields[k]))
        key = draw(st.sampled_from([k for k in integral if k != "version"] or ["version"]))
        low, high = INT_RANGES[fields[key].get("format", "int64")]
        contract[key] = draw(st.integers(max_value=low - 1) | st.integers(min_value=high + 1))
    else:
        key = draw(texts.filter(lambda k: k not in fields))
        contract[key] = draw(json_values)
    return how, name, contract


def test_schema_is_generated_from_the_rust_types() -> None:
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(CONTRACT_DEFS) == set(OP_FOR_CONTRACT)
    assert len(SCHEMA["oneOf"]) == 4
    for def_name in CONTRACT_DEFS.values():
        definition = DEFS[def_name]
        assert definition["additionalProperties"] is False
        assert {"contract", "version"} <= set(definition["required"])
        assert definition["properties"]["version"]["const"] == 1
    assert set(DEFS["RunStartedV1"]["required"]) == {"contract", "version", "run_id", "timestamp"}
    trial_status = {o["const"] for o in DEFS["TrialStatus"]["oneOf"]}
    assert trial_status == set(TRIAL_STATUSES)
    run_status = {o["const"] for o in DEFS["RunStatus"]["oneOf"]}
    assert run_status == {"succeeded", "failed", "cancelled", "timeout"}
    assert _bridge.contract_schema() == SCHEMA


def test_validate_contract_normalises() -> None:
    minimal = {"contract": "run_started", "version": 1, "run_id": "r1", "timestamp": "t"}
    assert _bridge.validate_contract(minimal) == {**minimal, "objective": "accuracy"}
    with pytest.raises(_bridge.ContractError, match="version 2 is not supported") as err:
        _bridge.validate_contract({**minimal, "version": 2})
    assert err.value.run_id == "r1"
    with pytest.raises(_bridge.ContractError, match="must be a JSON object"):
        _bridge.validate_contract([minimal])  # type: ignore[arg-type]


PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(contract=valid_contracts)
def test_valid_contracts_pass_cross_unchanged_and_stay_valid(
    service: _bridge.Bridge, faults: _bridge.Bridge, contract: dict
) -> None:
    normalised = _bridge.validate_contract(contract)
    assert normalised["contract"] == contract["contract"]
    for key, value in contract.items():
        if value not in (None, {}, []):
            assert normalised[key] == value
    assert _bridge.validate_contract(normalised) == normalised
    # Through the bridge to a Python op and back: the same dict, still valid.
    echoed = service.call("echo", contract)
    assert echoed == contract
    assert _bridge.validate_contract(echoed) == normalised
    # The contract op that takes it accepts it too.
    faults.call(OP_FOR_CONTRACT[contract["contract"]], contract)


@PROPERTY_SETTINGS
@given(case=invalid_contracts())
def test_invalid_contracts_are_refused(faults: _bridge.Bridge, case: tuple) -> None:
    how, name, contract = case
    with pytest.raises(_bridge.ContractError) as err:
        _bridge.validate_contract(contract)
    assert err.value.error_class == "contract"
    op = OP_FOR_CONTRACT[name]
    header_dropped = how == "missing" and not {"contract", "version"} <= set(contract)
    if header_dropped:
        # An op's payload may leave out `contract` and `version`: they are implied by the op.
        faults.call(op, contract)
    else:
        with pytest.raises(_bridge.ContractError):
            faults.call(op, contract)
